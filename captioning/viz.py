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


def attention_figure(
    image: np.ndarray,
    words: Sequence[str],
    weights: torch.Tensor,
    grid: tuple[int, int],
    panel: int = 160,
    columns: int = 6,
) -> Image.Image:
    """A contact sheet: the image, then a panel per word titled with the word.

    Args:
        image: (H, W, 3) uint8, the picture as the model saw it (or the original).
        words: the generated words, one per row of ``weights``.
        weights: (L, N) attention of the step that emitted each word.
        grid: the encoder's region grid (h, w), h * w = N.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"attention_figure needs an (H, W, 3) uint8 RGB image, got {image.dtype} "
            f"{image.shape} (captioning.data.images.load_image gives one)"
        )
    font = ImageFont.load_default()
    title = 18
    base = np.asarray(Image.fromarray(image).resize((panel, panel), Image.BILINEAR))
    panels = [("(image)", base)]
    panels += [(w, overlay(base, weights[i], grid)) for i, w in enumerate(words)]
    rows = -(-len(panels) // columns)
    sheet = Image.new("RGB", (columns * panel, rows * (panel + title)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (word, pixels) in enumerate(panels):
        x, y = (i % columns) * panel, (i // columns) * (panel + title)
        draw.text((x + 4, y + 3), word, fill="black", font=font)
        sheet.paste(Image.fromarray(pixels), (x, y + title))
    return sheet
