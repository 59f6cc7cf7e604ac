"""A torchmetrics wrapper: predictions of every rank are gathered, each image scored once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from captioning.metrics.diversity import set_diversity, split_usage
from captioning.metrics.scores import meteor_backend, score
from captioning.metrics.spice import spice_score

log = logging.getLogger(__name__)


class CaptionMetric(Metric):
    """Collect generated token ids per image index; ``compute`` scores them with ``score``.

    Each update stores the kept ids flat plus one length per caption, so batches (and ranks)
    with different caption lengths ``L`` concatenate without padding. Under DDP the
    ``"cat"`` states are gathered from all ranks; images seen twice (samplers pad the last
    batch with repeats) are scored once, the first occurrence winning.

    An update may also carry each image's n-best captions (``nbest_ids``); the scores are of
    the first caption (``token_ids``) alone. After ``compute``, ``last_predictions`` maps each
    image index to its caption and ``last_nbest`` to its n-best list, best first (the one
    caption when no n-best was given). With n-best lists of 2 or more captions the scores
    also hold their diversity (``mBLEU-4``, ``div-1``, ``div-2``, ``self-CIDEr``); given the
    vocabulary size, the split's ``vocab_usage``, ``mean_length`` and (with the training
    captions) ``novel`` (:mod:`captioning.metrics.diversity`).

    Args:
        references: image index -> tokenised, space-joined reference captions.
        decode: token ids (cut at ``<eos>``, padding removed) -> caption string.
        pad_id: padding id, dropped from the generated ids.
        eos_id: end-of-sentence id; it and everything after it are cut.
        meteor: passed on to :func:`~captioning.metrics.scores.score`: True or ``"python"``
            (our METEOR), ``"java"`` (pycocoevalcap's Java scorer) or False (none).
        spice: also SPICE (pycocoevalcap's Java scorer, :mod:`captioning.metrics.spice`); a
            failure of the jar is logged and the other scores are kept.
        vocabulary_size: words the model can generate (special tokens excluded), for
            ``vocab_usage``; None: no split-level usage scores.
        training_captions: tokenised, space-joined training captions, for ``novel``.
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
        spice: bool = False,
        vocabulary_size: int | None = None,
        training_captions: Collection[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        meteor_backend(meteor)  # an unknown value fails here, not after the first epoch
        self.references = references
        self.decode = decode
        self.pad_id = pad_id
        self.eos_id = eos_id
        self.meteor = meteor
        self.spice = spice
        self.vocabulary_size = vocabulary_size
        self.training_captions = None if training_captions is None else frozenset(training_captions)
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        # the n-best captions: per image how many, per caption its length, the ids flat
        self.add_state("nbest_counts", default=[], dist_reduce_fx="cat")
        self.add_state("nbest_lengths", default=[], dist_reduce_fx="cat")
        self.add_state("nbest_ids", default=[], dist_reduce_fx="cat")
        self.last_predictions: dict[int, str] = {}
        self.last_nbest: dict[int, list[str]] = {}

    def update(
        self,
        image_indices: torch.Tensor,
        token_ids: torch.Tensor,
        nbest_ids: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: ``image_indices`` (B,), the generated ``token_ids`` (B, L) that are
        scored and, optionally, each image's ``nbest_ids`` (B, n, L'), best first."""
        if token_ids.dim() != 2 or image_indices.shape != token_ids.shape[:1]:
            raise ValueError(
                f"expected image_indices (B,) and token_ids (B, L), got "
                f"{tuple(image_indices.shape)} and {tuple(token_ids.shape)}"
            )
        if nbest_ids is not None:
            if nbest_ids.dim() != 3 or nbest_ids.shape[0] != token_ids.shape[0]:
                raise ValueError(
                    f"expected nbest_ids (B, n, L) for B={token_ids.shape[0]}, got "
                    f"{tuple(nbest_ids.shape)}"
                )
            lengths, ids = self._kept(nbest_ids.flatten(0, 1))
            self.nbest_counts.append(
                torch.full_like(image_indices.long().reshape(-1), nbest_ids.shape[1])
            )
            self.nbest_lengths.append(lengths)
            self.nbest_ids.append(ids)
        lengths, ids = self._kept(token_ids)
        self.indices.append(image_indices.long().reshape(-1))
        self.lengths.append(lengths)
        self.ids.append(ids)

    def _kept(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row of ``token_ids`` (M, L) the number of ids before ``<eos>`` that are not
        ``<pad>``, and those ids flat, row-major (each caption's ids stay together)."""
        token_ids = token_ids.long()
        length = token_ids.shape[1]
        positions = torch.arange(length, device=token_ids.device)
        is_eos = token_ids == self.eos_id
        # first <eos> of each row (L where there is none)
        first_eos = torch.where(is_eos, positions, length).min(dim=1).values if length else None
        keep = token_ids != self.pad_id
        if first_eos is not None:
            keep &= positions.unsqueeze(0) < first_eos.unsqueeze(1)
        return keep.sum(dim=1), token_ids[keep]

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
        self.last_nbest = self._nbest(indices) or {i: [c] for i, c in predictions.items()}
        missing = [i for i in predictions if i not in self.references]
        if missing:
            raise ValueError(f"no references for predicted image indices {missing[:5]}")
        references = {i: self.references[i] for i in predictions}
        scores = score(references, predictions, tokenized=True, meteor=self.meteor)
        if self.spice:
            try:
                scores["SPICE"] = spice_score(references, predictions)[0]
            except RuntimeError as error:  # the other scores are not lost to a Java failure
                log.error("SPICE left out: %s", error)
        if self.vocabulary_size is not None:
            scores.update(split_usage(predictions, self.vocabulary_size, self.training_captions))
        if min(len(captions) for captions in self.last_nbest.values()) > 1:
            nbest = {i: self.last_nbest[i] for i in predictions}
            scores.update(set_diversity(nbest, references))
        return {key: torch.tensor(value, dtype=torch.float64) for key, value in scores.items()}

    def _nbest(self, indices: list[int]) -> dict[int, list[str]]:
        """Each image's n-best captions (the first occurrence of an image winning), or {}
        when no update carried them (either every update carries them or none)."""
        if isinstance(self.nbest_counts, list) and not self.nbest_counts:
            return {}
        counts = dim_zero_cat(self.nbest_counts)
        if not counts.numel():  # gathered from ranks that had none
            return {}
        if counts.numel() != len(indices):
            raise ValueError("CaptionMetric: some updates carried nbest_ids and others did not")
        lengths = dim_zero_cat(self.nbest_lengths).long().tolist()
        ids = dim_zero_cat(self.nbest_ids).long().tolist()
        nbest: dict[int, list[str]] = {}
        caption = offset = 0
        for index, count in zip(indices, counts.long().tolist(), strict=True):
            captions = []
            for length in lengths[caption : caption + count]:
                captions.append(self.decode(ids[offset : offset + length]))
                offset += length
            caption += count
            nbest.setdefault(index, captions)
        return nbest
