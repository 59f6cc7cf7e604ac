"""Dataset readers, one function per on-disk layout, all producing the same records.

A reader turns the files a user downloaded into :class:`ImageRecord` s (image path, raw
captions, split, a stable id). Errors name the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import logging
import random
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
IMAGE_DIR_CANDIDATES = ("Images", "images", "Flicker8k_Dataset", "Flickr8k_Dataset")


class DataError(ValueError):
    """Bad input data; the message names the file (and line) and what to change."""


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    path: Path
    captions: tuple[str, ...]
    split: str


def find_image_dir(root: Path, image_dir: str | None = None) -> Path:
    if image_dir:
        path = Path(image_dir)
        path = path if path.is_absolute() else root / path
        if not path.is_dir():
            raise DataError(f"data.image_dir: {path} is not a directory")
        return path
    for name in IMAGE_DIR_CANDIDATES:
        if (root / name).is_dir():
            return root / name
    raise DataError(
        f"{root}: no image folder found (looked for {', '.join(IMAGE_DIR_CANDIDATES)}); "
        "set data.image_dir"
    )


def read_kaggle_captions(path: Path) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Parse a Flickr8k Kaggle ``captions.txt`` (``image,caption`` CSV).

    Returns image -> captions and image -> the line where it first appears.

    Captions may be quoted (with commas inside) or not; an unquoted caption with commas is
    taken whole, since image file names never contain commas.
    """
    if not path.is_file():
        raise DataError(f"{path}: captions file not found (data.root must hold captions.txt)")
    captions: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}:1: empty file, expected the header 'image,caption'")
            if [h.strip().lower() for h in header] != ["image", "caption"]:
                raise DataError(
                    f"{path}:1: expected the header 'image,caption', found {','.join(header)!r}"
                )
            line = reader.line_num
            for row in reader:
                where = f"{path}:{line + 1}"
                line = reader.line_num
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) < 2:
                    raise DataError(f"{where}: expected 'image,caption', found {row!r}")
                image, caption = row[0].strip(), ",".join(row[1:]).strip()
                if len(caption) > 1 and caption[0] == caption[-1] == '"':  # quoted after a space
                    caption = caption[1:-1].replace('""', '"').strip()
                if not image:
                    raise DataError(f"{where}: empty image name")
                if not caption:
                    raise DataError(f"{where}: empty caption for {image}")
                captions.setdefault(image, []).append(caption)
                first_line.setdefault(image, line)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from None
    except csv.Error as error:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None
    if not captions:
        raise DataError(f"{path}: no captions found")
    return captions, first_line


def read_split_lists(root: Path, files: dict[str, str]) -> dict[str, list[tuple[str, int]]] | None:
    """Image names per split with their line numbers, or None when the lists are absent."""
    present = {split: root / name for split, name in files.items() if (root / name).is_file()}
    if not present:
        return None
    if len(present) != len(files):
        missing = sorted(set(files) - set(present))
        raise DataError(f"{root}: split lists incomplete, missing {[files[s] for s in missing]}")
    lists = {}
    for split, path in present.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        lists[split] = [(name.strip(), i + 1) for i, name in enumerate(lines) if name.strip()]
    return lists


def seeded_split(
    names: list[str], val_size: float | int, test_size: float | int, seed: int
) -> dict[str, str]:
    """Assign each name a split; sizes are counts (>= 1) or fractions (< 1)."""
    total = len(names)

    def count(size: float | int, key: str) -> int:
        n = int(size) if size >= 1 else round(size * total)
        if size < 0 or (size > 0 and n == 0):
            raise DataError(f"data.split.{key}={size} gives no images out of {total}")
        return n

    n_val, n_test = count(val_size, "val_size"), count(test_size, "test_size")
    if n_val + n_test >= total:
        raise DataError(
            f"data.split: {total} images are too few for val_size={val_size} and "
            f"test_size={test_size} (nothing left to train on); lower them"
        )
    order = sorted(names)
    random.Random(seed).shuffle(order)
    splits = {name: "val" for name in order[:n_val]}
    splits.update({name: "test" for name in order[n_val : n_val + n_test]})
    splits.update({name: "train" for name in order[n_val + n_test :]})
    return splits


def read_flickr8k_kaggle(
    root: str | Path,
    image_dir: str | None = None,
    val_size: float | int = 0.1,
    test_size: float | int = 0.1,
    split_seed: int = 0,
) -> list[ImageRecord]:
    """Flickr8k as Kaggle ships it: ``captions.txt`` + ``Images/`` (+ optional split lists)."""
    root = Path(root)
    captions_file = root / "captions.txt"
    captions, first_line = read_kaggle_captions(captions_file)
    images = find_image_dir(root, image_dir)
    lists = read_split_lists(root, FLICKR8K_SPLIT_FILES)
    if lists is None:
        assignment = seeded_split(list(captions), val_size, test_size, split_seed)
        log.info("No split lists in %s: seeded split (seed %d)", root, split_seed)
    else:
        assignment = {}
        for split, names in lists.items():
            list_file = root / FLICKR8K_SPLIT_FILES[split]
            for name, line in names:
                if name not in captions:
                    raise DataError(
                        f"{list_file}:{line}: {name} has no captions in {captions_file}"
                    )
                if name in assignment:
                    raise DataError(f"{list_file}:{line}: {name} is already in {assignment[name]}")
                assignment[name] = split
        left_out = len(set(captions) - set(assignment))
        if left_out:
            log.info("%d images of %s are in no split list and are left out", left_out, root)
    records = []
    for name, split in assignment.items():
        path = images / name
        if not path.is_file():
            raise DataError(f"{captions_file}:{first_line[name]}: image {name} not found at {path}")
        records.append(ImageRecord(name, path, tuple(captions[name]), split))
    return sorted(records, key=lambda r: (SPLITS.index(r.split), r.image_id))
