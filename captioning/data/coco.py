"""JSON layouts: Karpathy's split files and the official COCO caption annotations."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from captioning.data.caption_files import find_image_dir
from captioning.data.records import (
    SPLITS,
    BadData,
    CaptionTable,
    DataError,
    ImageRecord,
    build_records,
)

log = logging.getLogger(__name__)

KARPATHY_SPLITS = (*SPLITS, "restval")
RESTVAL = ("train", "val", "drop")


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_bytes())
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None


def _require(value: Any, kind: type, where: str, what: str) -> Any:
    if not isinstance(value, kind):
        raise DataError(f"{where}: expected {what}, found {type(value).__name__}")
    return value


def find_karpathy_file(root: Path, karpathy_file: str | None) -> Path | None:
    """``data.karpathy_file`` (relative to root), or the one ``dataset_*.json`` in root."""
    if karpathy_file:
        path = Path(karpathy_file)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise DataError(f"data.karpathy_file: {path} not found")
        return path
    found = sorted(root.glob("dataset_*.json"))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(f"{root}: several Karpathy files ({names}); set data.karpathy_file")
    return found[0] if found else None


def karpathy_split(split: str, restval: str) -> str:
    return restval if split == "restval" else split


def read_karpathy(
    root: str | Path,
    image_dir: str | None = None,
    karpathy_file: str | None = None,
    restval: str = "train",
    errors: BadData | None = None,
    allow_outside_root: bool = False,
    require_images: bool = True,
) -> list[ImageRecord]:
    """Karpathy's ``dataset_{flickr8k,flickr30k,coco}.json``: ``images[]`` with ``filename``,
    optional ``filepath`` (COCO), ``split`` (train/restval/val/test) and ``sentences[].raw``.

    ``restval`` joins ``train`` unless ``data.restval=val|drop``. Images are under
    ``data.image_dir`` when set, else ``root/filepath/filename`` (COCO), else the first of
    the usual image folders under root.
    """
    root, errors = Path(root), errors or BadData()
    if restval not in RESTVAL:
        raise DataError(f"data.restval={restval!r}: expected one of {', '.join(RESTVAL)}")
    path = find_karpathy_file(root, karpathy_file)
    if path is None:
        raise DataError(f"{root}: no Karpathy split file (dataset_*.json); set data.karpathy_file")
    data = _require(read_json(path), dict, str(path), "a JSON object with 'images'")
    entries = _require(data.get("images"), list, f"{path}: images", "a list")
    table = CaptionTable(errors)
    assignment: dict[str, str] = {}
    folders: dict[str, str] = {}
    coco_ids: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: images[{index}]"
        _require(entry, dict, where, "an object")
        name = str(entry.get("filename", "")).strip()
        if not name:
            errors("empty image name", f"{where}: no filename")
            continue
        split = str(entry.get("split", ""))
        if split not in KARPATHY_SPLITS:
            errors("unknown split", f"{where}: unknown split {split!r} for {name}")
            continue
        split = karpathy_split(split, restval)
        sentences = _require(entry.get("sentences", []), list, f"{where}.sentences", "a list")
        for number, sentence in enumerate(sentences):
            raw = sentence.get("raw", "") if isinstance(sentence, dict) else ""
            if not raw and isinstance(sentence, dict) and sentence.get("tokens"):
                raw = " ".join(sentence["tokens"])
            table.add(name, str(raw), f"{where}.sentences[{number}]")
        if name in table.captions and split != "drop":
            assignment[name] = split
            folders[name] = str(entry.get("filepath") or "")
            if isinstance(entry.get("cocoid"), int):  # COCO's; Flickr files have only imgid
                coco_ids[name] = entry["cocoid"]
    if not table.captions:
        raise DataError(f"{path}: no captions found")
    images = None
    if image_dir or not any(folders.values()):
        images = find_image_dir(root, image_dir, required=require_images)
    return build_records(
        table,
        assignment,
        lambda name: (images / name) if images else root / folders[name] / name,
        errors,
        within=(root, images) if images else (root,),
        allow_outside_root=allow_outside_root,
        coco_ids=coco_ids,
        require_images=require_images,
    )


def _coco_year(root: Path, year: int | None) -> int:
    if year is not None:
        return int(year)
    for candidate in (2014, 2017):
        if (root / "annotations" / f"captions_train{candidate}.json").is_file():
            return candidate
    raise DataError(
        f"{root}/annotations: no captions_train2014.json or captions_train2017.json; "
        "set data.coco_year or data.root"
    )


def _read_annotations(path: Path, table: CaptionTable) -> dict[int, str]:
    """Add one COCO caption file's captions to ``table``; its image ids -> file names."""
    if not path.is_file():
        raise DataError(f"{path}: COCO annotation file not found")
    data = _require(read_json(path), dict, str(path), "a JSON object")
    images = _require(data.get("images"), list, f"{path}: images", "a list")
    annotations = _require(data.get("annotations"), list, f"{path}: annotations", "a list")
    names: dict[int, str] = {}
    for index, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DataError(f"{path}: images[{index}]: expected 'id' and 'file_name'")
        names[int(image["id"])] = str(image["file_name"])
    for index, annotation in enumerate(annotations):
        where = f"{path}: annotations[{index}]"
        if not isinstance(annotation, dict) or "image_id" not in annotation:
            raise DataError(f"{where}: expected 'image_id' and 'caption'")
        name = names.get(int(annotation["image_id"]))
        if name is None:
            table.errors(
                "unknown image", f"{where}: image_id {annotation['image_id']} not in images"
            )
            continue
        table.add(name, str(annotation.get("caption", "")), where)
    return names


def read_coco(
    root: str | Path,
    image_dir: str | None = None,
    karpathy_file: str | None = None,
    restval: str = "train",
    coco_year: int | None = None,
    split_seed: int = 0,
    errors: BadData | None = None,
    allow_outside_root: bool = False,
    require_images: bool = True,
) -> list[ImageRecord]:
    """Official COCO: ``annotations/captions_{train,val}{year}.json`` + ``{train,val}{year}/``.

    With Karpathy's ``dataset_coco.json`` (in root or ``data.karpathy_file``) images take
    its splits (matched on ``cocoid``); without it train is train and val is split (seeded)
    into val and test halves.
    """
    root, errors = Path(root), errors or BadData()
    year = _coco_year(root, coco_year)
    images_dir = None  # data.image_dir (relative to root), else train{year}/ and val{year}/
    if image_dir:
        images_dir = find_image_dir(root, image_dir, required=require_images)
    table = CaptionTable(errors)
    folder: dict[str, Path] = {}
    official: dict[str, str] = {}
    by_id: dict[int, str] = {}
    for part in ("train", "val"):
        names = _read_annotations(root / "annotations" / f"captions_{part}{year}.json", table)
        for image_id, name in names.items():
            if name in table.captions:
                folder[name] = images_dir or root / f"{part}{year}"
                official[name] = part
                by_id[image_id] = name
    karpathy = find_karpathy_file(root, karpathy_file)
    if karpathy is not None:
        assignment = _karpathy_assignment(karpathy, by_id, restval, errors)
        log.info("COCO %d: Karpathy splits from %s", year, karpathy)
    else:
        val_names = sorted(n for n, part in official.items() if part == "val")
        random.Random(split_seed).shuffle(val_names)
        half = len(val_names) // 2
        assignment = {n: "train" for n, part in official.items() if part == "train"}
        assignment.update({n: "val" for n in val_names[:half]})
        assignment.update({n: "test" for n in val_names[half:]})
        log.info(
            "COCO %d without dataset_coco.json: train%d is train, val%d is split (seed %d) "
            "into val and test halves",
            year,
            year,
            year,
            split_seed,
        )
    return build_records(
        table,
        assignment,
        lambda name: folder[name] / name,
        errors,
        within=(root, images_dir) if images_dir else (root,),
        allow_outside_root=allow_outside_root,
        coco_ids={name: image_id for image_id, name in by_id.items()},
        require_images=require_images,
    )


def _karpathy_assignment(
    path: Path, by_id: dict[int, str], restval: str, errors: BadData
) -> dict[str, str]:
    if restval not in RESTVAL:
        raise DataError(f"data.restval={restval!r}: expected one of {', '.join(RESTVAL)}")
    data = _require(read_json(path), dict, str(path), "a JSON object with 'images'")
    assignment = {}
    for index, entry in enumerate(_require(data.get("images"), list, f"{path}: images", "a list")):
        where = f"{path}: images[{index}]"
        image_id = entry.get("cocoid", entry.get("imgid")) if isinstance(entry, dict) else None
        name = by_id.get(int(image_id)) if image_id is not None else None
        if name is None:
            errors("unknown image", f"{where}: cocoid {image_id} not in the COCO annotations")
            continue
        split = str(entry.get("split", ""))
        if split not in KARPATHY_SPLITS:
            errors("unknown split", f"{where}: unknown split {split!r} for {name}")
            continue
        if karpathy_split(split, restval) != "drop":
            assignment[name] = karpathy_split(split, restval)
    left_out = len(by_id) - len(assignment)
    if left_out:
        log.info("%d COCO images are in no split of %s and are left out", left_out, path)
    return assignment
