"""The one image-reading path of training, evaluation and captioning, with errors that name the file.

Every image comes out as 8-bit RGB the way a viewer shows it: the first frame of an animation,
16-bit samples scaled to 8 bits, EXIF orientation applied, grey/palette/CMYK/alpha converted.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as F

from captioning.data.formats import DataError

# torchvision decodes these fully (EXIF orientation included for JPEG and PNG); the others,
# and WebP when animated or rotated by EXIF (torchvision refuses the first and ignores the
# second's tag), go through PIL.
TORCHVISION_FORMATS = ("JPEG", "MPO", "PNG", "GIF")
EXIF_ORIENTATION = 0x0112
PIL_16_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


class ImageError(DataError):
    """An image that cannot be used; ``kind`` is its ``BadData`` category, ``reason`` the cause."""

    def __init__(self, path: str | Path, reason: str, kind: str = "unreadable image") -> None:
        if kind == "oversized image":
            super().__init__(f"{path}: {reason}")
        else:
            super().__init__(f"{path}: cannot decode image ({reason})")
        self.path, self.reason, self.kind = Path(path), reason, kind


def to_8_bit(image: torch.Tensor) -> torch.Tensor:
    """uint16 -> uint8 as ``round(value * 255 / 65535)``.

    torchvision's ``to_dtype(..., scale=True)`` truncates (``value // 256``), which is one level
    off for a quarter of the 65536 values (255 becomes 0, not 1). 255/65535 is 1/257 and
    ``value / 257`` is never a half, so ``(value + 128) // 257`` is the exact rounding.
    """
    return ((image.to(torch.int32) + 128) // 257).to(torch.uint8)


def _decode_with_torchvision(path: Path) -> torch.Tensor:
    image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    if image.ndim == 4:  # an animated GIF: (frames, 3, H, W)
        image = image[0]
    if image.dtype == torch.uint16:  # 16-bit PNG
        image = to_8_bit(image)
    return image


def _decode_with_pil(path: Path) -> torch.Tensor:
    with Image.open(path) as opened:
        opened.seek(0)
        image = ImageOps.exif_transpose(opened)
        if image.mode in PIL_16_BIT_MODES:  # convert("RGB") would clip these at 255, not scale
            grey = to_8_bit(torch.from_numpy(np.asarray(image).astype(np.int32).clip(0, 65535)))
            return grey.expand(3, *grey.shape).clone()
        pixels = np.asarray(image.convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


def _uses_torchvision(image: Image.Image) -> bool:
    if image.format in TORCHVISION_FORMATS:
        return True
    if image.format == "WEBP":
        still = not getattr(image, "is_animated", False)
        return still and image.getexif().get(EXIF_ORIENTATION, 1) == 1
    return False


def decode(
    path: str | Path,
    max_pixels: int | None = None,
    pixels_setting: str = "data.max_image_pixels",
) -> torch.Tensor:
    """Decode one image file to ``(3, H, W)`` uint8 RGB; raises :class:`ImageError`.

    The header is read first, so an image over ``max_pixels`` is refused before it is decoded
    (a decompression bomb); ``pixels_setting`` is the config key named in that message.
    """
    path = Path(path)
    try:
        with Image.open(path) as header:
            width, height = header.size
            torchvision_can = _uses_torchvision(header)
    except Image.DecompressionBombError as error:
        raise ImageError(path, f"{error} ({pixels_setting})", "oversized image") from None
    except Exception as error:  # PIL raises many types for files that are not images
        raise ImageError(path, str(error) or type(error).__name__) from None
    if max_pixels and width * height > max_pixels:
        raise ImageError(
            path,
            f"{width}x{height} pixels exceeds {pixels_setting}={max_pixels} (a decompression bomb?)",
            "oversized image",
        )
    try:
        image = _decode_with_torchvision(path) if torchvision_can else _decode_with_pil(path)
    except Exception as error:  # torchvision raises RuntimeError, PIL OSError/ValueError/...
        raise ImageError(path, str(error).splitlines()[-1] or type(error).__name__) from None
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ImageError(path, f"decoded to {image.dtype} {tuple(image.shape)}, not 8-bit RGB")
    return image  # (3, H, W) uint8


def load_image(
    path: str | Path,
    size: int | None,
    max_pixels: int | None = None,
    pixels_setting: str = "data.max_image_pixels",
) -> torch.Tensor:
    """Decode any image (see :func:`decode`) to RGB uint8 ``(3, size, size)``."""
    image = decode(path, max_pixels, pixels_setting)  # (3, H, W) uint8
    if size is not None and tuple(image.shape[-2:]) != (size, size):
        image = F.resize(image, [size, size], antialias=True)
    return image


def load_images(
    paths: list[Path], size: int, threads: int = 4, max_pixels: int | None = None
) -> torch.Tensor:
    """Decode many images into one ``(N, 3, size, size)`` uint8 tensor (decoding frees the GIL)."""
    out = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)

    def fill(i: int) -> None:
        out[i] = load_image(paths[i], size, max_pixels)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fill, range(len(paths))))
    return out


def find_bad_images(
    paths: list[Path], max_pixels: int | None, threads: int | None = None
) -> list[ImageError | None]:
    """Decode every image as :func:`load_image` will, in parallel: per path, its error or None.

    A full decode, not a header check: a truncated JPEG or a 16-bit PNG passes a header
    check and would only fail in the first batch that holds it.
    """

    def problem(path: Path) -> ImageError | None:
        try:
            decode(path, max_pixels)
        except ImageError as error:
            return error
        return None

    with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(problem, paths))
