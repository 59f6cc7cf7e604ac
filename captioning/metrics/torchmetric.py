"""A torchmetrics wrapper: predictions of every rank are gathered, each image scored once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from captioning.metrics.scores import score


class CaptionMetric(Metric):
    """Collect decoded token ids per image index; ``compute`` scores them with ``score``.

    Token ids are stored flat with their lengths, so ranks with different caption lengths
    concatenate cleanly under DDP.

    Args:
        references: image index -> tokenised, space-joined reference captions.
        decode: token ids (cut at ``<eos>``) -> caption string.
        pad_id / eos_id: the vocabulary's ids.
    """

    full_state_update = False

    def __init__(
        self,
        references: Mapping[int, Sequence[str]],
        decode: Callable[[list[int]], str],
        pad_id: int,
        eos_id: int,
    ) -> None:
        super().__init__()
        self.references = references
        self.decode = decode
        self.pad_id = pad_id
        self.eos_id = eos_id
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.last_predictions: dict[int, str] = {}

    def update(self, image_indices: torch.Tensor, token_ids: torch.Tensor) -> None:
        token_ids = token_ids.long()
        ended = (token_ids == self.eos_id) | (token_ids == self.pad_id)  # (B, L)
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)
        first_end = torch.where(ended, positions, token_ids.shape[1]).min(dim=1).values  # (B,)
        keep = positions.unsqueeze(0) < first_end.unsqueeze(1)  # (B, L)
        self.indices.append(image_indices.long())
        self.lengths.append(first_end)
        self.ids.append(token_ids[keep])

    def compute(self) -> dict[str, torch.Tensor]:
        indices = dim_zero_cat(self.indices).tolist()
        lengths = dim_zero_cat(self.lengths).tolist()
        ids = dim_zero_cat(self.ids).tolist() if self.ids else []
        predictions: dict[int, str] = {}
        offset = 0
        for index, length in zip(indices, lengths, strict=True):
            if index not in predictions:  # DDP samplers pad with repeats: first one wins
                predictions[index] = self.decode(ids[offset : offset + length])
            offset += length
        self.last_predictions = predictions
        scores = score({i: self.references[i] for i in predictions}, predictions, tokenized=True)
        return {key: torch.tensor(value, dtype=torch.float64) for key, value in scores.items()}
