"""Reading the files a layout is made of, and the two choices every layout makes from them.

Text files are read with their line numbers (:func:`decode_lines`, :func:`read_csv_rows`), so
that an error can name the line; :func:`read_split_lists` reads one image name per line. The
image folder is found among the usual names (:func:`find_image_dir`), and without split lists
:func:`seeded_split` assigns the splits.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from captioning.data.records import BadData, DataError

IMAGE_DIR_CANDIDATES = (
    "Images",
    "images",
    "Flicker8k_Dataset",  # the original Flickr8k archive's spelling
    "Flickr8k_Dataset",
    "flickr30k-images",
    "flickr30k_images",
)


def find_image_dir(root: Path, image_dir: str | None = None, required: bool = True) -> Path:
    """``data.image_dir`` (relative to root unless absolute), else the first of
    ``IMAGE_DIR_CANDIDATES`` found in root; not ``required`` (region features serve the
    images), the first candidate's path when none is there."""
    if image_dir:
        path = Path(image_dir)
        path = path if path.is_absolute() else root / path
        if required and not path.is_dir():
            raise DataError(f"data.image_dir: {path} is not a directory")
        return path
    for name in IMAGE_DIR_CANDIDATES:
        if (root / name).is_dir():
            return root / name
    if not required:
        return root / IMAGE_DIR_CANDIDATES[0]
    raise DataError(
        f"{root}: no image folder found (looked for {', '.join(IMAGE_DIR_CANDIDATES)}); "
        "set data.image_dir"
    )


def decode_lines(path: Path, errors: BadData) -> list[tuple[int, str]]:
    """The lines of a text file with their numbers; a line that is not UTF-8 is bad data."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    lines = []
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            lines.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError as error:
            byte = error.object[error.start]
            errors("non-UTF-8 text", f"{path}:{number}: not UTF-8 text (byte 0x{byte:02x})")
    return lines


def _undecodable(text: str) -> int | None:
    """The first byte that was not UTF-8 (decoded with ``surrogateescape``), or None."""
    return next((ord(ch) - 0xDC00 for ch in text if "\udc80" <= ch <= "\udcff"), None)


def read_csv_rows(path: Path, columns: tuple[str, ...], errors: BadData) -> list[tuple[int, dict]]:
    """Rows of a CSV with a header holding ``columns`` (case-insensitive), with line numbers.

    A caption may be quoted (commas inside) or not: an unquoted last column with commas is
    taken whole, since image file names never contain commas.
    """
    if not path.is_file():
        raise DataError(f"{path}: captions file not found")
    text = path.read_bytes().removeprefix(b"\xef\xbb\xbf").decode("utf-8", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}:1: empty file, expected the header {','.join(columns)!r}")
        names = [h.strip().lower() for h in header]
        if names[: len(columns)] != list(columns):
            raise DataError(
                f"{path}:1: expected the header {','.join(columns)!r}, found {','.join(header)!r}"
            )
        rows = []
        line = reader.line_num
        for row in reader:
            number, line = line + 1, reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            byte = _undecodable(",".join(row))
            if byte is not None:
                errors("non-UTF-8 text", f"{path}:{number}: not UTF-8 text (byte 0x{byte:02x})")
                continue
            if len(row) < len(columns):
                raise DataError(f"{path}:{number}: expected {','.join(columns)!r}, found {row!r}")
            extra = len(row) - len(names)
            if extra > 0:  # unquoted commas in the caption column
                caption_at = names.index("caption")
                row = [
                    *row[:caption_at],
                    ",".join(row[caption_at : caption_at + extra + 1]),
                    *row[caption_at + extra + 1 :],
                ]
            values = dict.fromkeys(names, "")  # a short row's missing cells are empty, not absent
            values.update({name: cell.strip() for name, cell in zip(names, row, strict=False)})
            caption = values.get("caption", "")
            if len(caption) > 1 and caption[0] == caption[-1] == '"':  # quoted after a space
                values["caption"] = caption[1:-1].replace('""', '"').strip()
            rows.append((number, values))
    except csv.Error as error:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None
    return rows


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
        lines = decode_lines(path, BadData())
        lists[split] = [(name.strip(), number) for number, name in lines if name.strip()]
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
