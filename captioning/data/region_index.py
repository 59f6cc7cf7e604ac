"""Which images have regions, under which key, and how their boxes become fractions.

At setup :func:`check_region_files` reads every image's region headers (through a
:class:`~captioning.data.regions.RegionReader`) and sends the bad ones through the
``data.on_error`` policy; the images whose region files store no size get their image
file's, from its header. :func:`normalised_boxes` is how a served box is scaled.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from captioning.data.images import EXIF_ORIENTATION
from captioning.data.records import BadData, DataError, ImageRecord
from captioning.data.regions import RegionError, RegionReader, RegionShape

log = logging.getLogger(__name__)


def region_keys(records: Sequence[ImageRecord], mode: str) -> list[str]:
    """Each record's key in the region files (``data.region_key``): its COCO id (``cocoid``),
    its image file's stem (``stem``), or the first where the record has one (``auto``)."""
    keys = []
    for record in records:
        if mode == "cocoid" and record.coco_id is None:
            raise DataError(
                f"data.region_key=cocoid: image {record.image_id} has no COCO id (only the coco "
                "layout and Karpathy files with cocoid give one); set data.region_key=stem or auto"
            )
        use_id = record.coco_id is not None and mode != "stem"
        keys.append(str(record.coco_id) if use_id else record.path.stem)
    first: dict[str, str] = {}
    for record, key in zip(records, keys, strict=True):
        other = first.setdefault(key, record.image_id)
        if other != record.image_id:
            raise DataError(
                f"data.region_key={mode}: images {other} and {record.image_id} both have the "
                f"key {key!r} and would get the same regions; rename one of the images"
            )
    return keys


def normalised_boxes(boxes: np.ndarray, size: tuple[float, float] | None) -> np.ndarray:
    """Pixel boxes ``(N, 4)`` as fractions of the image, ``x1/w, y1/h, x2/w, y2/h`` in [0, 1].

    Without the image's size they are divided by their own largest x and y (the extent of
    the regions, which is at most the image).
    """
    if size is None:
        size = (float(boxes[:, 0::2].max()), float(boxes[:, 1::2].max()))
    width, height = (side if side > 0 else 1.0 for side in size)
    scale = np.array([width, height, width, height], dtype=np.float32)
    return np.clip(boxes / scale, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class RegionCheck:
    """What the setup check found: which images pass, and what serving them needs."""

    good: list[bool]  # per key
    dim: int  # D (0 when no image passed)
    has_boxes: bool  # every image that passed has boxes
    sizes: list[tuple[int, int] | None]  # per key: its image file's size, where that was read


def _image_size(path: Path) -> tuple[int, int] | None:
    """An image file's (width, height) from its header, as shown (EXIF orientation applied,
    as the image pipeline decodes it); None when there is no readable image file."""
    if not path.is_file():
        return None
    try:
        with Image.open(path) as image:  # the header only
            width, height = image.size
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # 90 degrees
    except Exception:  # PIL raises many types for files that are not images
        return None
    return (height, width) if turned else (width, height)


def check_region_files(
    reader: RegionReader,
    keys: Sequence[str],
    images: Sequence[Path],
    errors: BadData,
    labels: Sequence[str],
    threads: int | None = None,
) -> RegionCheck:
    """Check every image's region headers, in threads; bad ones go through ``errors`` in
    order, named by file and by ``labels`` (the image ids).

    Images whose region file stores no size get their image file's size from its header
    when the file is there (``images``); the rest are normalised by their boxes' extent,
    which one warning says.
    """

    def shape(key: str) -> RegionShape | RegionError:
        try:
            return reader.shape(key)
        except RegionError as error:
            return error

    workers = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        shapes = list(pool.map(shape, keys))
    good: list[bool] = []
    passed: dict[int, RegionShape] = {}  # key index -> its shape
    dim, first = 0, ""
    for index, (key, label, found) in enumerate(zip(keys, labels, shapes, strict=True)):
        if isinstance(found, RegionError):
            errors(found.kind, f"{found} (image {label})")
        elif dim and found.dim != dim:
            errors(
                "bad region file",
                f"{reader.where(key)}: features of width {found.dim}, but {first} has {dim} "
                f"(image {label}; every image needs the same D)",
            )
        else:
            dim, first = dim or found.dim, first or reader.where(key)
            passed[index] = found
        good.append(index in passed)
    boxed = sum(shape.boxes for shape in passed.values())
    has_boxes = bool(passed) and boxed == len(passed)
    if 0 < boxed < len(passed):
        log.warning(
            "%s: %d of %d images have no boxes: no boxes are served (has_boxes=False); "
            "data.region_boxes gives them from a folder",
            reader.path,
            len(passed) - boxed,
            len(passed),
        )
    sizes: list[tuple[int, int] | None] = [None] * len(keys)
    if has_boxes:
        unsized = [index for index, shape in passed.items() if not shape.sized]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            found = pool.map(lambda i: _image_size(images[i]), unsized)
            for index, size in zip(unsized, found, strict=True):
                sizes[index] = size
        extent = sum(sizes[i] is None for i in unsized)
        if extent:
            log.warning(
                "%s: %d of %d images have neither image_w / image_h in their region file nor "
                "a readable image file: their boxes are normalised by their own largest x2, y2",
                reader.path,
                extent,
                len(passed),
            )
    return RegionCheck(good, dim, has_boxes, sizes)
