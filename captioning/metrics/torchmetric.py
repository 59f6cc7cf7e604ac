"""A torchmetrics wrapper: predictions of every rank are gathered, each image scored once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from captioning.metrics.scores import meteor_backend, score


class CaptionMetric(Metric):
    """Collect generated token ids per image index; ``compute`` scores them with ``score``.

    Each update stores the kept ids flat plus one length per caption, so batches (and ranks)
    with different caption lengths ``L`` concatenate without padding. Under DDP the
    ``"cat"`` states are gathered from all ranks; images seen twice (samplers pad the last
    batch with repeats) are scored once, the first occurrence winning.

    Args:
        references: image index -> tokenised, space-joined reference captions.
        decode: token ids (cut at ``<eos>``, padding removed) -> caption string.
        pad_id: padding id, dropped from the generated ids.
        eos_id: end-of-sentence id; it and everything after it are cut.
        meteor: passed on to :func:`~captioning.metrics.scores.score`: True or ``"python"``
            (our METEOR), ``"java"`` (pycocoevalcap's Java scorer) or False (none).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(
        self,
        references: Mapping[int, Sequence[str]],
        decode: Callable[[list[int]], str],
        pad_id: int,
        eos_id: int,
        meteor: bool | str = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        meteor_backend(meteor)  # an unknown value fails here, not after the first epoch
        self.references = references
        self.decode = decode
        self.pad_id = pad_id
        self.eos_id = eos_id
        self.meteor = meteor
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.last_predictions: dict[int, str] = {}

    def update(self, image_indices: torch.Tensor, token_ids: torch.Tensor) -> None:
        """Add a batch: ``image_indices`` (B,) and generated ``token_ids`` (B, L)."""
        if token_ids.dim() != 2 or image_indices.shape != token_ids.shape[:1]:
            raise ValueError(
                f"expected image_indices (B,) and token_ids (B, L), got "
                f"{tuple(image_indices.shape)} and {tuple(token_ids.shape)}"
            )
        token_ids = token_ids.long()
        length = token_ids.shape[1]
        positions = torch.arange(length, device=token_ids.device)
        is_eos = token_ids == self.eos_id
        # first <eos> of each row (L where there is none)
        first_eos = torch.where(is_eos, positions, length).min(dim=1).values if length else None
        keep = token_ids != self.pad_id
        if first_eos is not None:
            keep &= positions.unsqueeze(0) < first_eos.unsqueeze(1)
        self.indices.append(image_indices.long().reshape(-1))
        self.lengths.append(keep.sum(dim=1))
        self.ids.append(token_ids[keep])  # row-major: each caption's ids stay together

    def compute(self) -> dict[str, torch.Tensor]:
        """Scores of the unique images predicted so far (on every rank, after gathering)."""
        if isinstance(self.indices, list) and not self.indices:
            raise ValueError("CaptionMetric.compute() called before any update()")
        indices = dim_zero_cat(self.indices).tolist()
        lengths = dim_zero_cat(self.lengths).tolist()
        ids = dim_zero_cat(self.ids).tolist()
        predictions: dict[int, str] = {}
        offset = 0
        for index, count in zip(indices, lengths, strict=True):
            if index not in predictions:
                predictions[index] = self.decode(ids[offset : offset + count])
            offset += count
        self.last_predictions = predictions
        missing = [i for i in predictions if i not in self.references]
        if missing:
            raise ValueError(f"no references for predicted image indices {missing[:5]}")
        references = {i: self.references[i] for i in predictions}
        scores = score(references, predictions, tokenized=True, meteor=self.meteor)
        return {key: torch.tensor(value, dtype=torch.float64) for key, value in scores.items()}
