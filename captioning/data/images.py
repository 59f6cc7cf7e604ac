"""Image decoding and resizing through torchvision, with errors that name the file."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as F

from captioning.data.formats import DataError


def load_image(path: str | Path, size: int | None) -> torch.Tensor:
    """Decode any image (grey, RGBA, palette, ...) to RGB uint8 ``(3, size, size)``."""
    try:
        image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)  # (3, H, W) uint8
    except (RuntimeError, OSError, ValueError) as error:
        raise DataError(f"{path}: cannot decode image ({error})") from None
    if size is not None and tuple(image.shape[-2:]) != (size, size):
        image = F.resize(image, [size, size], antialias=True)
    return image


def load_images(paths: list[Path], size: int, threads: int = 4) -> torch.Tensor:
    """Decode many images into one ``(N, 3, size, size)`` uint8 tensor (decoding frees the GIL)."""
    out = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)

    def fill(i: int) -> None:
        out[i] = load_image(paths[i], size)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fill, range(len(paths))))
    return out
