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

The Flickr and folder readers are here, Karpathy's and COCO's in :mod:`captioning.data.coco`;
:class:`DatasetReader` states how the DataModule calls any of them, yours included. The records,
errors and bad-data policy (:mod:`captioning.data.records`) and the file helpers
(:mod:`captioning.data.caption_files`) are re-exported, so this module stays the one import path.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

from captioning.data.caption_files import (
    IMAGE_DIR_CANDIDATES,
    decode_lines,
    find_image_dir,
    read_csv_rows,
    read_split_lists,
    seeded_split,
)
from captioning.data.records import (
    SPLITS,
    BadData,
    CaptionTable,
    DataError,
    ImageRecord,
    build_records,
    inside,
    repeat_message,
    short_place,
)

__all__ = [
    "FLICKR8K_SPLIT_FILES",
    "IMAGE_DIR_CANDIDATES",
    "LAYOUTS",
    "SPLITS",
    "TOKEN_FILES",
    "BadData",
    "CaptionTable",
    "DataError",
    "DatasetReader",
    "ImageRecord",
    "assign_flickr_splits",
    "build_records",
    "decode_lines",
    "find_image_dir",
    "inside",
    "read_csv_rows",
    "read_flickr8k_kaggle",
    "read_flickr_token",
    "read_folder",
    "read_kaggle_captions",
    "read_split_lists",
    "repeat_message",
    "seeded_split",
    "short_place",
]

log = logging.getLogger(__name__)

LAYOUTS = ("kaggle", "token", "karpathy", "coco", "folder")
FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
TOKEN_FILES = ("Flickr8k.token.txt", "results_20130124.token", "Flickr30k.token.txt")


class DatasetReader(Protocol):
    """How :class:`~captioning.data.CaptionDataModule` calls ``data.reader`` (a Hydra partial).

    The keywords below come from the data config's top level (``data.root``, ``data.layout``,
    ``data.image_dir``, ``data.on_error`` as a :class:`~captioning.data.BadData`,
    ``data.allow_outside_root``); the keys under ``data.reader`` (besides ``_target_`` and
    ``_partial_``) arrive as further keyword arguments. It returns one
    :class:`~captioning.data.ImageRecord` per image: a unique ``image_id``, the image file's
    ``path``, its raw (untokenised) ``captions`` and its ``split`` (``train`` | ``val`` |
    ``test``). A bad record is reported with ``errors(kind, message)``, which raises or counts
    it as ``data.on_error`` says; the reader then leaves it out.

    With ``data.region_features`` the DataModule also passes ``require_images=False`` to a
    reader that takes it: an image whose file is absent is then kept (its regions are read
    from the feature files), and the record's optional ``coco_id`` keys those files.
    """

    def __call__(
        self,
        root: Path,
        *,
        layout: str,
        image_dir: str | None,
        errors: BadData,
        allow_outside_root: bool,
    ) -> list[ImageRecord]: ...


# ---------------------------------------------------------------------- the Flickr layouts


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


def _flickr_records(
    root: Path,
    path: Path,
    table: CaptionTable,
    image_dir: str | None,
    split: tuple[float | int, float | int, int],
    errors: BadData,
    allow_outside_root: bool,
    require_images: bool = True,
) -> list[ImageRecord]:
    """The records of a Flickr caption table read from ``path``: its image folder, the split
    lists (or a seeded ``(val_size, test_size, split_seed)`` split), paths kept inside root."""
    if not table.captions:
        raise DataError(f"{path}: no captions found")
    images = find_image_dir(root, image_dir, required=require_images)
    assignment = assign_flickr_splits(root, table, *split)
    return build_records(
        table,
        assignment,
        lambda name: images / name,
        errors,
        within=(root, images),
        allow_outside_root=allow_outside_root,
        require_images=require_images,
    )


def read_flickr8k_kaggle(
    root: str | Path,
    image_dir: str | None = None,
    val_size: float | int = 0.1,
    test_size: float | int = 0.1,
    split_seed: int = 0,
    errors: BadData | None = None,
    allow_outside_root: bool = False,
    require_images: bool = True,
) -> list[ImageRecord]:
    """Flickr8k as Kaggle ships it: ``captions.txt`` + ``Images/`` (+ optional split lists)."""
    root, errors = Path(root), errors or BadData()
    table = CaptionTable(errors)
    path = root / "captions.txt"
    for number, row in read_csv_rows(path, ("image", "caption"), errors):
        table.add(row["image"], row["caption"], f"{path}:{number}")
    return _flickr_records(
        root,
        path,
        table,
        image_dir,
        (val_size, test_size, split_seed),
        errors,
        allow_outside_root,
        require_images,
    )


def read_flickr_token(
    root: str | Path,
    image_dir: str | None = None,
    val_size: float | int = 0.1,
    test_size: float | int = 0.1,
    split_seed: int = 0,
    errors: BadData | None = None,
    allow_outside_root: bool = False,
    require_images: bool = True,
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
        root,
        path,
        table,
        image_dir,
        (val_size, test_size, split_seed),
        errors,
        allow_outside_root,
        require_images,
    )


# ---------------------------------------------------------------------- your own folder

_FolderRow = tuple[str, str, str, str | None]  # (where, image, caption, split or None)


def read_folder(
    root: str | Path,
    image_dir: str | None = None,
    val_size: float | int = 0.1,
    test_size: float | int = 0.1,
    split_seed: int = 0,
    errors: BadData | None = None,
    allow_outside_root: bool = False,
    require_images: bool = True,
) -> list[ImageRecord]:
    """Your own images: ``captions.csv`` (``image,caption[,split]``) or ``captions.jsonl``
    (``{"image": ..., "caption": ...[, "split": ...]}``), image paths relative to the image
    folder (``data.image_dir``, else ``images/``/``Images/`` when present, else root).

    A ``split`` column (or key) is used as is and then every row needs one: an empty cell is
    a bad record, not a reason to reshuffle the user's splits. Without it, a seeded split.
    """
    root, errors = Path(root), errors or BadData()
    path, rows = _folder_rows(root, errors)
    table, given = _folder_table(rows, errors)
    if not table.captions:
        raise DataError(f"{path}: no captions found")
    if image_dir or any((root / n).is_dir() for n in ("images", "Images")):
        images = find_image_dir(root, image_dir, required=require_images)
    else:
        images = root
    if given is not None:
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
        require_images=require_images,
    )


def _folder_rows(root: Path, errors: BadData) -> tuple[Path, list[_FolderRow]]:
    """The caption file of a folder (``captions.csv``, else ``captions.jsonl``) and its rows."""
    rows: list[_FolderRow] = []
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
    return path, rows


def _folder_table(
    rows: list[_FolderRow], errors: BadData
) -> tuple[CaptionTable, dict[str, tuple[str, str]] | None]:
    """The rows' captions and, when any row has a split, each image's (split, where it was
    given); an empty split or one that contradicts the image's earlier rows is bad data."""
    table = CaptionTable(errors)
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
    return table, given if has_split else None
