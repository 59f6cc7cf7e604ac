"""Caption-file rows: an empty split cell and a path leaving data.root are named by file and
line; a repeated (image, caption) row is kept once and counted, in every layout."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from hydra.utils import instantiate
from PIL import Image

from captioning.data.datamodule import CaptionDataModule
from captioning.data.formats import BadData, DataError
from captioning.data.layouts import read_dataset
from tests.helpers import compose_train
from tests.test_layouts import CAPTIONS, NAMES, SPLIT, WRITERS

# each layout's image folder, where a caption file's image names are looked up
IMAGE_FOLDER = {
    "kaggle": "Images",
    "token": "Flicker8k_Dataset",
    "karpathy": "Images",
    "coco": "train2014",
    "folder": "images",
    "folder_csv": ".",
}


def _layout(layout: str, tmp_path: Path) -> Path:
    root = tmp_path / layout
    root.mkdir()
    WRITERS[layout](root)
    return root


def _add_row(layout: str, root: Path, image: str, caption: str) -> str:
    """Append one (image, caption) row, in train, to the layout's caption file: where it is."""
    if layout == "kaggle":
        with (root / "captions.txt").open("a", newline="") as handle:
            csv.writer(handle).writerow([image, caption])
        where = f"captions.txt:{len((root / 'captions.txt').read_text().splitlines())}"
    elif layout == "token":
        with (root / "Flickr8k.token.txt").open("a") as handle:
            handle.write(f"{image}#9\t{caption}\n")
        where = f"Flickr8k.token.txt:{len((root / 'Flickr8k.token.txt').read_text().splitlines())}"
    elif layout == "karpathy":
        path = root / "dataset_flickr8k.json"
        data = json.loads(path.read_text())
        entry = next((e for e in data["images"] if e["filename"] == image), None)
        if entry is None:
            entry = {"filename": image, "split": "train", "sentences": []}
            data["images"].append(entry)
        entry["sentences"].append({"raw": caption})
        path.write_text(json.dumps(data))
        index = data["images"].index(entry)
        where = f"dataset_flickr8k.json: images[{index}].sentences[{len(entry['sentences']) - 1}]"
    elif layout == "coco":
        path = root / "annotations" / "captions_train2014.json"
        data = json.loads(path.read_text())
        image_id = next((i["id"] for i in data["images"] if i["file_name"] == image), None)
        if image_id is None:  # a new image: COCO takes its split from the Karpathy file
            image_id = 900 + len(data["images"])
            data["images"].append({"id": image_id, "file_name": image})
            karpathy = json.loads((root / "dataset_coco.json").read_text())
            karpathy["images"].append({"filename": image, "cocoid": image_id, "split": "train"})
            (root / "dataset_coco.json").write_text(json.dumps(karpathy))
        data["annotations"].append({"id": 9999, "image_id": image_id, "caption": caption})
        path.write_text(json.dumps(data))
        where = f"captions_train2014.json: annotations[{len(data['annotations']) - 1}]"
    elif layout == "folder":
        with (root / "captions.jsonl").open("a") as handle:
            handle.write(json.dumps({"image": image, "caption": caption, "split": "train"}) + "\n")
        where = f"captions.jsonl:{len((root / 'captions.jsonl').read_text().splitlines())}"
    else:
        with (root / "captions.csv").open("a", newline="") as handle:
            csv.writer(handle).writerow([image, caption, "train"])
        where = f"captions.csv:{len((root / 'captions.csv').read_text().splitlines())}"
    if layout in ("kaggle", "token") and image not in NAMES:  # the split lists pick the images
        with (root / "Flickr_8k.trainImages.txt").open("a") as handle:
            handle.write(image + "\n")
    return where


def _read(root: Path, on_error: str = "raise", **options) -> tuple[list, BadData]:
    errors = BadData(on_error)
    return read_dataset(root, errors=errors, **options), errors


# ---------------------------------------------------------------------- the split column


def _folder_csv(root: Path, splits: list[str]) -> Path:
    names = [f"{i}.png" for i in range(len(splits))]
    for i, name in enumerate(names):
        Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(root / name)
    rows = [f"{name},a red square number {i},{splits[i]}" for i, name in enumerate(names)]
    (root / "captions.csv").write_text("image,caption,split\n" + "\n".join(rows) + "\n")
    return root


SPLITS_GIVEN = ["train"] * 6 + ["val", "val", "test", "test"]


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_an_empty_split_cell_is_a_bad_record_not_a_new_split(on_error: str, tmp_path) -> None:
    splits = list(SPLITS_GIVEN)
    splits[8] = ""  # 8.png, a test image, on line 10
    root = _folder_csv(tmp_path, splits)
    if on_error == "raise":
        with pytest.raises(
            DataError,
            match=r"captions.csv:10: empty split for 8.png; with a split column every row needs "
            r"train, val or test .*\(data.on_error=skip drops such records\)",
        ):
            _read(root)
        return
    records, errors = _read(root, "skip")
    assert dict(errors.counts) == {"empty split": 1}
    # the user's splits are kept as given: no test image moves into training
    assert {r.image_id: r.split for r in records} == {
        f"{i}.png": s for i, s in enumerate(SPLITS_GIVEN) if i != 8
    }


def test_a_row_missing_its_split_key_in_jsonl_is_named(tmp_path: Path) -> None:
    root = _layout("folder", tmp_path)
    lines = (root / "captions.jsonl").read_text().splitlines()
    row = json.loads(lines[14])  # the test image's first caption
    del row["split"]
    lines[14] = json.dumps(row)
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"captions.jsonl:15: empty split for {NAMES[7]}"):
        _read(root)
    records, errors = _read(root, "skip")
    assert dict(errors.counts) == {"empty split": 1}
    assert {r.image_id: r.split for r in records} == SPLIT
    assert {r.image_id: len(r.captions) for r in records}[NAMES[7]] == 1


def test_rows_of_one_image_that_disagree_on_its_split_are_named(tmp_path: Path) -> None:
    root = _folder_csv(tmp_path, SPLITS_GIVEN)
    with (root / "captions.csv").open("a") as handle:
        handle.write("8.png,another caption,train\n")
    with pytest.raises(
        DataError, match=r"captions.csv:12: split 'train' for 8.png, but .*captions.csv:10 puts"
    ):
        _read(root)
    records, errors = _read(root, "skip")
    assert dict(errors.counts) == {"conflicting split": 1}
    assert {r.image_id: r.split for r in records}["8.png"] == "test"


# ---------------------------------------------------------------------- paths leaving data.root


def _outside_image(root: Path) -> Path:
    path = root.parent / "outside" / "private.jpg"
    path.parent.mkdir(exist_ok=True)
    Image.new("RGB", (10, 12), (1, 2, 3)).save(path)
    return path


NAMINGS: dict[str, Callable[[Path, Path], str]] = {
    "relative": lambda image, folder: os.path.relpath(image, folder),  # ../../outside/private.jpg
    "absolute": lambda image, folder: str(image),
}


@pytest.mark.parametrize("naming", list(NAMINGS))
@pytest.mark.parametrize("layout", list(WRITERS))
def test_an_image_path_leaving_root_is_refused_by_file_and_line(
    layout: str, naming: str, tmp_path: Path
) -> None:
    root = _layout(layout, tmp_path)
    outside = _outside_image(root)
    name = NAMINGS[naming](outside, root / IMAGE_FOLDER[layout])
    where = _add_row(layout, root, name, "a private picture")
    message = (
        f"{where}: image path '{name}' leads outside data.root ({root}) to {outside}; "
        "data.allow_outside_root=true reads such paths"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        _read(root)
    records, errors = _read(root, "skip")
    assert dict(errors.counts) == {"image outside root": 1}
    assert sorted(r.image_id for r in records) == sorted(NAMES)
    records, errors = _read(root, allow_outside_root=True)
    assert not errors.counts
    (record,) = [r for r in records if r.image_id == name]
    assert record.path.resolve() == outside.resolve()


def test_a_path_inside_root_but_outside_the_image_folder_is_read(tmp_path: Path) -> None:
    root = _layout("kaggle", tmp_path)
    Image.new("RGB", (10, 12)).save(root / "extra.jpg")
    _add_row("kaggle", root, "../extra.jpg", "an extra picture")  # root/Images/../extra.jpg
    records, errors = _read(root)
    assert not errors.counts and "../extra.jpg" in [r.image_id for r in records]


@pytest.mark.parametrize("allow", [False, True])
def test_allow_outside_root_reaches_the_reader_from_the_data_config(
    allow: bool, tmp_path: Path
) -> None:
    root = _layout("folder_csv", tmp_path)
    outside = _outside_image(root)
    where = _add_row("folder_csv", root, str(outside), "a private picture")
    overrides = ["data=folder", f"data.root={root}", "data.num_workers=0"]
    cfg = compose_train(tmp_path, [*overrides, f"data.allow_outside_root={allow}"])
    module = instantiate(cfg.data, _convert_="all")
    if not allow:  # the default
        assert compose_train(tmp_path, overrides).data.allow_outside_root is False
        with pytest.raises(DataError, match=rf"{where}: image path .* leads outside data.root"):
            module.setup()
        return
    module.setup()
    assert str(outside) in [r.image_id for r in module.records["train"]]


# ---------------------------------------------------------------------- repeated rows


REPEATS = {  # the first caption of NAMES[0] is on this line (or place) of each layout's file
    "kaggle": "line 2",
    "token": "line 1",
    "karpathy": "images[0].sentences[0]",
    "coco": "annotations[0]",
    "folder": "line 1",
    "folder_csv": "line 2",
}


@pytest.mark.parametrize("on_error", ["raise", "skip"])
@pytest.mark.parametrize("layout", list(WRITERS))
def test_a_repeated_caption_is_kept_once_and_counted(
    layout: str, on_error: str, tmp_path: Path
) -> None:
    root = _layout(layout, tmp_path)
    expected = _read(root)[0]
    where = _add_row(layout, root, NAMES[0], CAPTIONS[NAMES[0]][0])
    records, errors = _read(root, on_error)
    assert records == expected  # the caption once, nothing else changed
    assert dict(errors.counts) == {"duplicate caption": 1}
    assert errors.summary() == f"1 duplicate caption dropped ({where} repeats {REPEATS[layout]})"


def test_the_summary_names_the_first_repeats(tmp_path: Path) -> None:
    root = _layout("folder_csv", tmp_path)
    for name in NAMES[:5]:
        _add_row("folder_csv", root, name, CAPTIONS[name][1])
    records, errors = _read(root)
    assert sum(len(r.captions) for r in records) == 2 * len(NAMES)
    assert errors.summary() == (
        "5 duplicate captions dropped (captions.csv:18 repeats line 3, "
        "captions.csv:19 repeats line 5, captions.csv:20 repeats line 7, ...)"
    )


def test_setup_reports_the_repeats_under_the_default_policy(tmp_path: Path, caplog) -> None:
    root = _layout("kaggle", tmp_path)
    _add_row("kaggle", root, NAMES[0], CAPTIONS[NAMES[0]][0])
    _add_row("kaggle", root, NAMES[3], CAPTIONS[NAMES[3]][1])
    module = CaptionDataModule(
        root=str(root), reader=partial(read_dataset), image_size=16, cache=False
    )  # on_error=raise
    with caplog.at_level(logging.WARNING):
        module.setup()
    assert module.skipped == {"duplicate caption": 2}
    assert sum(len(r.captions) for split in module.records.values() for r in split) == 16
    assert (
        "2 duplicate captions dropped (captions.txt:18 repeats line 2, "
        "captions.txt:19 repeats line 9)" in caplog.text
    )
