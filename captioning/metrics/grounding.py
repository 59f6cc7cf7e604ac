"""Grounding on Shapes: a phrase-level pointing game over the decoder's attention.

For each object phrase of a generated caption (``[size] colour shape``) that names an object
present in the image, the attention maps of the steps that emitted the phrase's words are
summed, upsampled to the image, and the phrase is a hit when the peak lies inside a matching
object's box dilated by ``dilation`` pixels. ``grounding_noun`` uses the map of the step that
emitted the shape word alone.

Over region inputs (boxes instead of a grid) the score has a box-level form: the phrase is a
hit when its most attended box overlaps a matching object's box with IoU >= ``min_iou``
(0.5), padded regions taking no part (their weight is zero).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from captioning.metrics.objects import object_phrases


def upsample_attention(
    attention: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """An (N,) attention map over an (h, w) region grid, bilinearly upsampled to (H, W)."""
    heat = attention.float().view(1, 1, *grid)
    return F.interpolate(heat, size=size, mode="bilinear", align_corners=False)[0, 0]


def _peak(attention: torch.Tensor, grid: tuple[int, int], image_size: int) -> tuple[int, int]:
    """(x, y) pixel of the maximum of an (N,) attention map upsampled to the image."""
    heat = upsample_attention(attention, grid, (image_size, image_size))
    flat = int(heat.view(-1).argmax())
    return flat % image_size, flat // image_size


def _inside(point: tuple[int, int], box: Sequence[int], dilation: int) -> bool:
    x, y = point
    x0, y0, x1, y1 = box
    return x0 - dilation <= x < x1 + dilation and y0 - dilation <= y < y1 + dilation


def phrase_hits(
    words: Sequence[str],
    weights: torch.Tensor,
    objects: Sequence[Mapping[str, Any]],
    grid: tuple[int, int],
    image_size: int,
    sizes: set[str],
    dilation: int = 2,
) -> tuple[int, int, int]:
    """(phrase hits, noun hits, phrases) for one caption; ``weights`` is (L, N), one row a word."""
    colours = {o["colour"] for o in objects}
    shapes = {o["shape"] for o in objects}
    hits = noun_hits = phrases = 0
    for i, colour, shape in object_phrases(words, colours, shapes):
        targets = [o["box"] for o in objects if o["colour"] == colour and o["shape"] == shape]
        if not targets:
            continue  # names no object of the image: object F1's business, not grounding's
        steps = [i, i + 1] if i == 0 or words[i - 1] not in sizes else [i - 1, i, i + 1]
        phrase_peak = _peak(weights[steps].sum(0), grid, image_size)
        noun_peak = _peak(weights[i + 1], grid, image_size)
        phrases += 1
        hits += any(_inside(phrase_peak, box, dilation) for box in targets)
        noun_hits += any(_inside(noun_peak, box, dilation) for box in targets)
    return hits, noun_hits, phrases


def box_iou(box: Sequence[float], other: Sequence[float]) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    width = min(box[2], other[2]) - max(box[0], other[0])
    height = min(box[3], other[3]) - max(box[1], other[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    area = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1])
    return inter / (area - inter)


def box_phrase_hits(
    words: Sequence[str],
    weights: torch.Tensor,
    objects: Sequence[Mapping[str, Any]],
    boxes: torch.Tensor,
    sizes: set[str],
    min_iou: float = 0.5,
) -> tuple[int, int, int]:
    """(phrase hits, noun hits, phrases) for one caption over region boxes: ``weights`` (L, N)
    one row a word, ``boxes`` (N, 4) in the objects' pixel coordinates."""
    colours = {o["colour"] for o in objects}
    shapes = {o["shape"] for o in objects}
    hits = noun_hits = phrases = 0
    for i, colour, shape in object_phrases(words, colours, shapes):
        targets = [o["box"] for o in objects if o["colour"] == colour and o["shape"] == shape]
        if not targets:
            continue
        steps = [i, i + 1] if i == 0 or words[i - 1] not in sizes else [i - 1, i, i + 1]
        phrase_box = boxes[int(weights[steps].sum(0).argmax())].tolist()
        noun_box = boxes[int(weights[i + 1].argmax())].tolist()
        phrases += 1
        hits += any(box_iou(phrase_box, box) >= min_iou for box in targets)
        noun_hits += any(box_iou(noun_box, box) >= min_iou for box in targets)
    return hits, noun_hits, phrases


class GroundingMetric(Metric):
    """Accumulates phrase and noun pointing-game hits over decoded batches (summed over ranks).

    Args:
        objects: image index -> annotated objects (``boxes.json`` entries).
        words: token ids -> list of words (cut at ``<eos>``).
        grid: the encoder's (h, w) region grid for the images; None for region inputs,
            whose boxes ``update`` receives (the box-level score).
        image_size: side of the (square) images the boxes refer to.
        dilation: pixels added around each box (grid form).
        min_iou: the overlap a most attended box needs with the object's (box form).
    """

    full_state_update = False

    def __init__(
        self,
        objects: Mapping[int, Sequence[Mapping[str, Any]]],
        words,
        grid: tuple[int, int] | None,
        image_size: int,
        dilation: int = 2,
        min_iou: float = 0.5,
    ) -> None:
        super().__init__()
        self.objects = objects
        self.words = words
        self.grid = grid
        self.min_iou = min_iou
        self.image_size = image_size
        self.dilation = dilation
        self.sizes = {o["size"] for objs in objects.values() for o in objs if "size" in o}
        for name in ("hits", "noun_hits", "phrases"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        image_indices: torch.Tensor,
        token_ids: torch.Tensor,
        weights: torch.Tensor,
        boxes: torch.Tensor | None = None,
    ) -> None:
        """``boxes`` (B, N, 4), normalised to [0, 1]: the regions' boxes (region inputs)."""
        weights = weights.detach().cpu()
        if self.grid is None:
            if boxes is None:
                raise ValueError("box-level grounding needs the regions' boxes")
            boxes = boxes.detach().cpu().double() * self.image_size
        for row, index in enumerate(image_indices.tolist()):
            words = self.words(token_ids[row].tolist())
            if self.grid is None:
                hits, noun_hits, phrases = box_phrase_hits(
                    words, weights[row], self.objects[index], boxes[row], self.sizes,
                    self.min_iou,
                )  # fmt: skip
            else:
                hits, noun_hits, phrases = phrase_hits(
                    words, weights[row], self.objects[index], self.grid, self.image_size,
                    self.sizes, self.dilation,
                )  # fmt: skip
            self.hits += hits
            self.noun_hits += noun_hits
            self.phrases += phrases

    def compute(self) -> dict[str, torch.Tensor]:
        total = self.phrases.clamp(min=1).double()
        return {"grounding": self.hits / total, "grounding_noun": self.noun_hits / total}
