"""Dataset readers, one per on-disk layout, all producing the same records.

A reader turns the files a user downloaded into :class:`ImageRecord` s (image path, raw
captions, split, a stable id). Errors name the file and, where there is one, the line; the
:class:`BadData` policy decides whether a bad record stops the run or is dropped and counted.

Layouts (``data.layout``; ``auto`` picks the first whose files are present):

- ``kaggle``: ``captions.txt`` (``image,caption`` CSV) + ``Images/`` (Flickr8k/30k on Kaggle).
- ``token``: ``Flickr8k.token.txt`` (``<file>#<n>\\t<caption>``) + ``Flicker8k_Dataset/``.
- ``karpathy``: ``dataset_{flickr8k,flickr30k,coco}.json`` (Karpathy's splits).
- ``coco``: ``annotations/captions_{train,val}{2014,2017}.json`` + ``{train,val}{year}/``.
- ``folder``: any folder of images + ``captions.csv`` or ``captions.jsonl``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LAYOUTS = ("kaggle", "token", "karpathy", "coco", "folder")
FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
TOKEN_FILES = ("Flickr8k.token.txt", "results_20130124.token", "Flickr30k.token.txt")
IMAGE_DIR_CANDIDATES = (
    "Images",
    "images",
    "Flicker8k_Dataset",  # the original Flickr8k archive's spelling
    "Flickr8k_Dataset",
    "flickr30k-images",
    "flickr30k_images",
)


class DataError(ValueError):
    """Bad input data; the message names the file (and line) and what to change."""


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    path: Path
    captions: tuple[str, ...]
    split: str


@dataclass
class BadData:
    """What to do with a bad record (``data.on_error``): ``raise`` it or ``skip`` and count it.

    ``kind`` names the case (``missing image``, ``empty caption``, ...): the counts per kind
    and the first message of each are reported at the end of setup. A harmless repeat
    (:meth:`drop`) is dropped and counted under either policy.
    """

    on_error: str = "raise"
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)

    SHOWN = 3  # dropped records named in the summary, per kind

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise DataError(f"data.on_error={self.on_error!r}: expected raise or skip")

    def __call__(self, kind: str, message: str) -> None:
        if self.on_error == "raise":
            raise DataError(message + " (data.on_error=skip drops such records)")
        self.counts[kind] += 1
        self.examples.setdefault(kind, message)

    def drop(self, kind: str, message: str) -> None:
        """Count a record that is dropped whatever the policy, since keeping it adds nothing."""
        self.counts[kind] += 1
        self.examples.setdefault(kind, message)
        shown = self.dropped.setdefault(kind, [])
        if len(shown) < self.SHOWN:
            shown.append(message)

    def summary(self) -> str:
        parts = []
        for kind, n in sorted(self.counts.items()):
            if kind in self.dropped:
                more = ", ..." if n > len(self.dropped[kind]) else ""
                plural = "s" if n != 1 else ""
                parts.append(f"{n} {kind}{plural} dropped ({', '.join(self.dropped[kind])}{more})")
            else:
                parts.append(f"{n} {kind} (first: {self.examples[kind]})")
        return "; ".join(parts)


def short_place(where: str) -> tuple[str, str]:
    """``(file name, place)`` of a ``path:line`` or ``path: images[3]`` location."""
    file, sep, place = where.partition(": ")
    if not sep:
        file, _, line = where.rpartition(":")
        place = f"line {line}"
    return Path(file).name, place


def repeat_message(where: str, first: str) -> str:
    """``captions.csv:14 repeats line 9`` (the file is named again only when it differs)."""
    file, place = short_place(where)
    first_file, first_place = short_place(first)
    line = place.removeprefix("line ")
    here = f"{file}:{line}" if line != place else f"{file}: {place}"
    there = first_place if first_file == file else f"{first_file} {first_place}"
    return f"{here} repeats {there}"


def inside(path: Path, folders: Sequence[Path]) -> bool:
    """Whether ``path`` lies in one of ``folders``, by its name alone: links are not followed,
    since an image folder that is a link to another disk is the user's own choice."""
    target = os.path.abspath(path)
    for folder in folders:
        base = os.path.abspath(folder)
        if os.path.commonpath([target, base]) == base:
            return True
    return False


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


# ---------------------------------------------------------------------- caption collection


class CaptionTable:
    """Image name -> captions in file order, with where each came from (``file:line``).

    Empty captions go through the bad-data policy; a repeated (image, caption) row is kept
    once and counted (real caption files repeat themselves: it is not worth stopping for).
    """

    def __init__(self, errors: BadData) -> None:
        self.errors = errors
        self.captions: dict[str, list[str]] = {}
        self.where: dict[str, str] = {}
        self._seen: dict[tuple[str, str], str] = {}

    def add(self, image: str, caption: str, where: str) -> bool:
        """Add one row; False when it was dropped (bad, or a repeat)."""
        caption = caption.strip()
        if not image:
            self.errors("empty image name", f"{where}: empty image name")
            return False
        if not caption:
            self.errors("empty caption", f"{where}: empty caption for {image}")
            return False
        first = self._seen.setdefault((image, caption), where)
        if first != where:
            self.errors.drop("duplicate caption", repeat_message(where, first))
            return False
        self.captions.setdefault(image, []).append(caption)
        self.where.setdefault(image, where)
        return True

    def __len__(self) -> int:
        return len(self.captions)


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


def read_kaggle_captions(
    path: Path, errors: BadData | None = None
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Parse a Flickr8k Kaggle ``captions.txt``: image -> captions, image -> first line."""
    table = CaptionTable(errors or BadData())
    for number, row in read_csv_rows(path, ("image", "caption"), table.errors):
        table.add(row["image"], row["caption"], f"{path}:{number}")
    if not table.captions:
        raise DataError(f"{path}: no captions found")
    return table.captions, {k: int(w.rsplit(":", 1)[1]) for k, w in table.where.items()}


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


def assign_flickr_splits(
    root: Path, table: CaptionTable, val_size, test_size, split_seed
) -> dict[str, str]:
    """The standard Flickr8k split lists when present in root, else a seeded split."""
    lists = read_split_lists(root, FLICKR8K_SPLIT_FILES)
    if lists is None:
        log.info("No split lists in %s: seeded split (seed %d)", root, split_seed)
        return seeded_split(list(table.captions), val_size, test_size, split_seed)
    assignment: dict[str, str] = {}
    for split, names in lists.items():
        list_file = root / FLICKR8K_SPLIT_FILES[split]
        for name, line in names:
            if name not in table.captions:
                table.errors("unknown image", f"{list_file}:{line}: {name} has no captions")
            elif name in assignment:
                table.errors(
                    "duplicate row", f"{list_file}:{line}: {name} is already in {assignment[name]}"
                )
            else:
                assignment[name] = split
    left_out = len(set(table.captions) - set(assignment))
    if left_out:
        log.info("%d images of %s are in no split list and are left out", left_out, root)
    return assignment


def build_records(
    table: CaptionTable,
    assignment: dict[str, str],
    image_path: Callable[[str], Path],
    errors: BadData,
    *,
    within: Sequence[Path],
    allow_outside_root: bool = False,
) -> list[ImageRecord]:
    """Records of the assigned images, in split order then by id; missing images are bad data.

    ``image_path(name) -> Path`` resolves an image name to its file, which must lie in one of
    ``within`` (data.root and the image folder) unless ``allow_outside_root``: a caption file
    is data, and ``../`` or an absolute path in it should not reach the rest of the disk.
    """
    records = []
    for name, split in assignment.items():
        if split not in SPLITS:
            errors("unknown split", f"{table.where[name]}: unknown split {split!r} for {name}")
            continue
        path = image_path(name)
        if not allow_outside_root and not inside(path, within):
            errors(
                "image outside root",
                f"{table.where[name]}: image path {name!r} leads outside data.root "
                f"({within[0]}) to {os.path.normpath(path)}; data.allow_outside_root=true "
                "reads such paths",
            )
            continue
        if not path.is_file():
            errors("missing image", f"{table.where[name]}: image {name} not found at {path}")
            continue
        records.append(ImageRecord(name, path, tuple(table.captions[name]), split))
    return sorted(records, key=lambda r: (SPLITS.index(r.split), r.image_id))


# ---------------------------------------------------------------------- the Flickr layouts


def _flickr_records(
    root: Path,
    path: Path,
    table: CaptionTable,
    image_dir: str | None,
    split: tuple[float | int, float | int, int],
    errors: BadData,
    allow_outside_root: bool,
) -> list[ImageRecord]:
    """The records of a Flickr caption table read from ``path``: its image folder, the split
    lists (or a seeded ``(val_size, test_size, split_seed)`` split), paths kept inside root."""
    if not table.captions:
        raise DataError(f"{path}: no captions found")
    images = find_image_dir(root, image_dir)
    assignment = assign_flickr_splits(root, table, *split)
    return build_records(
        table,
        assignment,
        lambda name: images / name,
        errors,
        within=(root, images),
        allow_outside_root=allow_outside_root,
    )


def read_flickr8k_kaggle(
    root: str | Path,
    image_dir: str | None = None,
    val_size: float | int = 0.1,
    test_size: float | int = 0.1,
    split_seed: int = 0,
    errors: BadData | None = None,
    allow_outside_root: bool = False,
) -> list[ImageRecord]:
    """Flickr8k as Kaggle ships it: ``captions.txt`` + ``Images/`` (+ optional split lists)."""
    root, errors = Path(root), errors or BadData()
    table = CaptionTable(errors)
    path = root / "captions.txt"
    for number, row in read_csv_rows(path, ("image", "caption"), errors):
        table.add(row["image"], row["caption"], f"{path}:{number}")
    return _flickr_records(
        root, path, table, image_dir, (val_size, test_size, split_seed), errors, allow_outside_root
    )


def read_flickr_token(
    root: str | Path,
    image_dir: str | None = None,
    val_size: float | int = 0.1,
    test_size: float | int = 0.1,
    split_seed: int = 0,
    errors: BadData | None = None,
    allow_outside_root: bool = False,
) -> list[ImageRecord]:
    """The original Flickr8k archive: ``Flickr8k.token.txt`` (``name.jpg#n<TAB>caption``),
    the ``Flickr_8k.*Images.txt`` split lists and ``Flicker8k_Dataset/`` (either spelling).

    Flickr30k's ``results_20130124.token`` has the same format (seeded split, no lists).
    """
    root, errors = Path(root), errors or BadData()
    path = next((root / name for name in TOKEN_FILES if (root / name).is_file()), None)
    if path is None:
        raise DataError(f"{root}: no token file found (looked for {', '.join(TOKEN_FILES)})")
    table = CaptionTable(errors)
    for number, line in decode_lines(path, errors):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        if not tab:
            raise DataError(
                f"{path}:{number}: expected '<image>#<n><TAB><caption>', found {line!r}"
            )
        table.add(key.rpartition("#")[0] or key, caption, f"{path}:{number}")
    return _flickr_records(
        root, path, table, image_dir, (val_size, test_size, split_seed), errors, allow_outside_root
    )


def read_folder(
    root: str | Path,
    image_dir: str | None = None,
    val_size: float | int = 0.1,
    test_size: float | int = 0.1,
    split_seed: int = 0,
    errors: BadData | None = None,
    allow_outside_root: bool = False,
) -> list[ImageRecord]:
    """Your own images: ``captions.csv`` (``image,caption[,split]``) or ``captions.jsonl``
    (``{"image": ..., "caption": ...[, "split": ...]}``), image paths relative to the image
    folder (``data.image_dir``, else ``images/``/``Images/`` when present, else root).

    A ``split`` column (or key) is used as is and then every row needs one: an empty cell is
    a bad record, not a reason to reshuffle the user's splits. Without it, a seeded split.
    """
    root, errors = Path(root), errors or BadData()
    table = CaptionTable(errors)
    rows: list[tuple[str, str, str, str | None]] = []  # (where, image, caption, split or None)
    csv_path, jsonl_path = root / "captions.csv", root / "captions.jsonl"
    if csv_path.is_file():
        path = csv_path
        for number, row in read_csv_rows(path, ("image", "caption"), errors):
            rows.append((f"{path}:{number}", row["image"], row["caption"], row.get("split")))
    elif jsonl_path.is_file():
        path = jsonl_path
        for number, line in decode_lines(path, errors):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not a JSON object ({error.msg})") from None
            if not isinstance(row, dict) or not {"image", "caption"} <= set(row):
                raise DataError(f'{path}:{number}: expected {{"image": ..., "caption": ...}}')
            split = None if "split" not in row else str(row["split"] or "").strip()
            rows.append((f"{path}:{number}", str(row["image"]).strip(), str(row["caption"]), split))
    else:
        raise DataError(f"{root}: no captions.csv or captions.jsonl")
    has_split = any(split is not None for *_, split in rows)
    given: dict[str, tuple[str, str]] = {}  # image -> (split, where it was given)
    for where, image, caption, split in rows:
        if has_split and not split:
            errors(
                "empty split",
                f"{where}: empty split for {image or 'a row'}; with a split column every row "
                "needs train, val or test (drop the column for a seeded split)",
            )
            continue
        if has_split and image in given and given[image][0] != split:
            first_split, first_where = given[image]
            errors(
                "conflicting split",
                f"{where}: split {split!r} for {image}, but {first_where} puts it in "
                f"{first_split!r}; an image's rows must agree",
            )
            continue
        if table.add(image, caption, where) and has_split:
            given.setdefault(image, (split, where))
    if not table.captions:
        raise DataError(f"{path}: no captions found")
    if image_dir or any((root / n).is_dir() for n in ("images", "Images")):
        images = find_image_dir(root, image_dir)
    else:
        images = root
    if has_split:
        assignment = {name: given[name][0] for name in table.captions}
    else:
        assignment = seeded_split(list(table.captions), val_size, test_size, split_seed)
        log.info("%s: no split column, seeded split (seed %d)", path, split_seed)
    return build_records(
        table,
        assignment,
        lambda name: images / name,
        errors,
        within=(root, images),
        allow_outside_root=allow_outside_root,
    )
