"""What a report shows of each decoded image: collected during the eval loop, scored after it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from captioning.metrics.bleu import build_corpus, sentence_bleu_array
from captioning.metrics.cider import cider_d_array
from captioning.metrics.meteor import meteor_score
from captioning.metrics.objects import object_f1
from captioning.metrics.rouge import rouge_l_scores

DECIMALS = 4  # attention weights and boxes in the page: enough to draw, a third of the bytes


@dataclass(frozen=True)
class Decoded:
    """One decoded image as the report keeps it (plain lists: it crosses ranks by pickling).

    ``attention`` is (len(words), N) over the image's real regions only (padding dropped);
    ``boxes`` (N, 4) are those regions' boxes, None for grid encoders or boxless regions.
    """

    words: list[str]
    attention: list[list[float]]
    boxes: list[list[float]] | None


class ReportCollector(L.Callback):
    """Keeps the words, attention and boxes of each image the ``split`` loop decodes.

    It reads what ``CaptioningModule.validation_step`` / ``test_step`` return (``indices``,
    ``tokens``, ``weights``) and the batch's ``boxes`` and ``region_mask`` (region inputs).
    Under DDP every rank keeps its share and the shares are gathered on global rank 0 at the
    end of the epoch, so only rank 0's ``decoded`` is complete.

    Args:
        split: ``val`` (the validation loop) or ``test`` (the test loop).
        limit: keep the images of index < ``limit`` (the split's first ``limit``); None: all.
    """

    def __init__(self, split: str, limit: int | None = None) -> None:
        if split not in ("val", "test"):
            raise ValueError(f"split must be val or test, got {split!r}")
        if limit is not None and limit < 1:
            raise ValueError(f"report_images must be >= 1 or null, got {limit}")
        self.split = split
        self.limit = limit
        self.decoded: dict[int, Decoded] = {}

    def _collect(self, pl_module: L.LightningModule, outputs: Any, batch: Mapping) -> None:
        tokens = outputs["tokens"].cpu()  # (B, L)
        weights = outputs["weights"].float().cpu()  # (B, L, N)
        boxes, mask = batch.get("boxes"), batch.get("region_mask")  # (B, N, 4), (B, N)
        for row, index in enumerate(outputs["indices"].tolist()):
            if self.limit is not None and index >= self.limit:
                continue
            words = pl_module.vocab.decode_ids(tokens[row].tolist())
            regions = int(mask[row].sum()) if mask is not None else weights.shape[-1]
            attention = weights[row, : len(words), :regions]  # padded regions come last
            kept_boxes = None
            if boxes is not None and bool(boxes[row, :regions].any()):  # zeros: no boxes
                kept_boxes = np.round(boxes[row, :regions].cpu().numpy(), DECIMALS).tolist()
            self.decoded[index] = Decoded(
                words, np.round(attention.numpy(), DECIMALS).tolist(), kept_boxes
            )

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.split == "val":
            self.decoded = {}

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.split == "test":
            self.decoded = {}

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.split == "val" and not trainer.sanity_checking:
            self._collect(pl_module, outputs, batch)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.split == "test":
            self._collect(pl_module, outputs, batch)

    def _gather(self, trainer: L.Trainer) -> None:
        if trainer.world_size == 1:
            return
        shares = [None] * trainer.world_size if trainer.is_global_zero else None
        torch.distributed.gather_object(self.decoded, shares, dst=0)
        if shares is not None:
            self.decoded = {i: d for share in shares for i, d in share.items()}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.split == "val" and not trainer.sanity_checking:
            self._gather(trainer)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.split == "test":
            self._gather(trainer)


def per_image_scores(
    references: Mapping[int, Sequence[str]],
    predictions: Mapping[int, str],
    objects: Mapping[int, Sequence[Mapping[str, Any]]] | None = None,
) -> dict[int, dict[str, float]]:
    """Each image's CIDEr-D (document frequencies over all ``predictions``), BLEU-4 (its own
    brevity penalty, as coco-caption lists it per image), METEOR (its segment score) and
    ROUGE-L; ``object_F1`` when ``objects`` are given.

    Captions are tokenised and space-joined (``datamodule.references``, the module's
    predictions); every image of ``predictions`` needs references.
    """
    refs = {i: list(references[i]) for i in predictions}
    corpus = build_corpus(refs, dict(predictions))
    columns: dict[str, dict[int, float]] = {
        "CIDEr-D": dict(zip(corpus.keys, cider_d_array(corpus).tolist(), strict=True)),
        "BLEU-4": dict(zip(corpus.keys, sentence_bleu_array(corpus).tolist(), strict=True)),
        "ROUGE-L": rouge_l_scores(refs, predictions),
    }
    _, columns["METEOR"] = meteor_score(refs, dict(predictions), tokenized=True)
    if objects is not None:
        columns["object_F1"] = {
            i: object_f1({i: caption}, {i: objects[i]})["object_F1"]
            for i, caption in predictions.items()
        }
    return {i: {name: float(column[i]) for name, column in columns.items()} for i in predictions}


def build_entries(
    decoded: Mapping[int, Decoded],
    predictions: Mapping[int, str],
    references: Mapping[int, Sequence[str]],
    image_ids: Sequence[str],
    image_paths: Sequence[Path | None],
    grid: tuple[int, int] | None,
    nbest: Mapping[int, Sequence[str]] | None = None,
    objects: Mapping[int, Sequence[Mapping[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """The report's entries (:func:`captioning.browse.write_report`) of the ``decoded`` images,
    in index order; scores are over every image of ``predictions``.

    Args:
        decoded: image index -> what :class:`ReportCollector` kept.
        predictions: image index -> the generated caption (tokenised), every image scored.
        references: image index -> its reference captions (tokenised).
        image_ids, image_paths: per index, the image's id and its file (None or a missing
            file: no picture).
        grid: the encoder's region grid (h, w), for images without boxes.
        nbest: image index -> the n-best captions, best first; else the one prediction.
        objects: image index -> annotated objects (Shapes), for a per-image object F1.
    """
    scores = per_image_scores(references, predictions, objects)
    entries = []
    for index in sorted(decoded):
        item = decoded[index]
        path = image_paths[index]
        regions = len(item.attention[0]) if item.attention else 0
        fits_grid = grid is not None and item.boxes is None and grid[0] * grid[1] == regions
        captions = list(nbest[index]) if nbest and index in nbest else [predictions[index]]
        entries.append(
            {
                "index": index,
                "image_id": image_ids[index],
                "image": str(path) if path is not None and Path(path).is_file() else None,
                "captions": captions,
                "words": item.words,
                "attention": item.attention,
                "grid": list(grid) if fits_grid else None,
                "boxes": item.boxes,
                "references": list(references[index]),
                "scores": scores[index],
            }
        )
    return entries
