"""Attention figures: the image, then one panel per generated word with its attention map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from captioning.metrics.grounding import upsample_attention


def _heat_colours(heat: np.ndarray) -> np.ndarray:
    """A blue-to-red colour ramp for values in [0, 1] (no plotting library needed)."""
    stops = np.array(
        [[0, 0, 128], [0, 90, 255], [0, 220, 220], [120, 230, 40], [255, 200, 0], [230, 20, 20]],
        dtype=np.float32,
    )
    position = np.clip(heat, 0, 1) * (len(stops) - 1)
    low = np.floor(position).astype(int).clip(0, len(stops) - 2)
    frac = (position - low)[..., None]
    return stops[low] * (1 - frac) + stops[low + 1] * frac


def overlay(
    image: np.ndarray, attention: torch.Tensor, grid: tuple[int, int], alpha: float = 0.55
) -> np.ndarray:
    """Blend an (N,) attention map, upsampled bilinearly, over an (H, W, 3) uint8 image."""
    heat = upsample_attention(attention, grid, image.shape[:2])
    heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp(min=1e-12)
    colours = _heat_colours(heat.numpy())
    return (image.astype(np.float32) * (1 - alpha) + colours * alpha).astype(np.uint8)


def box_heat(attention: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) map of an (N,) attention over boxes (N, 4) normalised to [0, 1]: each pixel
    holds the summed weight of the boxes covering it."""
    height, width = size
    heat = torch.zeros(height, width)
    for weight, box in zip(attention.float().tolist(), boxes.float().tolist(), strict=True):
        if weight <= 0:  # padding, or a box the word ignored
            continue
        x0, x1 = round(box[0] * width), round(box[2] * width)
        y0, y1 = round(box[1] * height), round(box[3] * height)
        heat[max(y0, 0) : max(y1, y0 + 1), max(x0, 0) : max(x1, x0 + 1)] += weight
    return heat


def box_overlay(
    image: np.ndarray, attention: torch.Tensor, boxes: torch.Tensor, alpha: float = 0.55
) -> np.ndarray:
    """Blend an (N,) attention over boxes onto an (H, W, 3) uint8 image, the most attended
    box outlined."""
    heat = box_heat(attention, boxes, image.shape[:2])
    heat = heat / heat.max().clamp(min=1e-12)
    colours = _heat_colours(heat.numpy())
    blended = Image.fromarray(
        (image.astype(np.float32) * (1 - alpha) + colours * alpha).astype(np.uint8)
    )
    top = boxes[int(attention.argmax())].tolist()
    height, width = image.shape[:2]
    ImageDraw.Draw(blended).rectangle(
        [top[0] * width, top[1] * height, top[2] * width - 1, top[3] * height - 1],
        outline="white",
        width=2,
    )
    return np.asarray(blended)


def attention_figure(
    image: np.ndarray,
    words: Sequence[str],
    weights: torch.Tensor,
    grid: tuple[int, int] | None,
    panel: int = 160,
    columns: int = 6,
    boxes: torch.Tensor | None = None,
) -> Image.Image:
    """A contact sheet: the image, then a panel per word titled with the word.

    Args:
        image: (H, W, 3) uint8, the picture as the model saw it (or the original).
        words: the generated words, one per row of ``weights``.
        weights: (L, N) attention of the step that emitted each word.
        grid: the encoder's region grid (h, w), h * w = N; None with ``boxes``.
        boxes: (N, 4) the regions' boxes normalised to [0, 1] (region inputs): each word's
            attention is drawn over the boxes, its most attended box outlined.
    """
    if grid is None and boxes is None:
        raise ValueError("attention_figure needs the region grid or the regions' boxes")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"attention_figure needs an (H, W, 3) uint8 RGB image, got {image.dtype} "
            f"{image.shape} (captioning.data.images.load_image gives one)"
        )
    font = ImageFont.load_default()
    title = 18
    base = np.asarray(Image.fromarray(image).resize((panel, panel), Image.BILINEAR))
    panels = [("(image)", base)]
    if boxes is not None:
        panels += [(w, box_overlay(base, weights[i], boxes)) for i, w in enumerate(words)]
    else:
        panels += [(w, overlay(base, weights[i], grid)) for i, w in enumerate(words)]
    rows = -(-len(panels) // columns)
    sheet = Image.new("RGB", (columns * panel, rows * (panel + title)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (word, pixels) in enumerate(panels):
        x, y = (i % columns) * panel, (i // columns) * (panel + title)
        draw.text((x + 4, y + 3), word, fill="black", font=font)
        sheet.paste(Image.fromarray(pixels), (x, y + title))
    return sheet
