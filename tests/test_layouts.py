"""Every on-disk layout yields the same records, and trains through the real config."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from captioning.data.formats import DataError
from captioning.data.layouts import detect_layout, read_dataset
from captioning.train import train
from tests.helpers import compose_train

NAMES = [f"{1000 + i}_img.jpg" for i in range(8)]
SPLIT = {name: "train" for name in NAMES[:6]} | {NAMES[6]: "val", NAMES[7]: "test"}
COLOURS = ["red", "green", "blue", "yellow", "red", "green", "blue", "yellow"]
CAPTIONS = {
    name: [f"A {colour} dog, running .", f"the {colour} dog {i} sits on grass"]
    for i, (name, colour) in enumerate(zip(NAMES, COLOURS, strict=True))
}


def _images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        i = NAMES.index(name)
        Image.new("RGB", (24 + i, 20), color=(30 * i, 255 - 30 * i, 90)).save(folder / name)


def _split_lists(root: Path) -> None:
    for split, file in (("train", "trainImages"), ("val", "devImages"), ("test", "testImages")):
        names = [n for n in NAMES if SPLIT[n] == split]
        (root / f"Flickr_8k.{file}.txt").write_text("\n".join(names) + "\n")


def write_kaggle(root: Path) -> None:
    _images(root / "Images", NAMES)
    with (root / "captions.txt").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        writer.writerows((n, c) for n in NAMES for c in CAPTIONS[n])
    _split_lists(root)


def write_token(root: Path) -> None:
    _images(root / "Flicker8k_Dataset", NAMES)  # the original archive's spelling
    lines = [f"{n}#{k}\t{c}" for n in NAMES for k, c in enumerate(CAPTIONS[n])]
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    _split_lists(root)


def _karpathy_images(filepath: dict[str, str] | None = None) -> list[dict]:
    entries = []
    for i, name in enumerate(NAMES):
        split = "restval" if i == 5 else SPLIT[name]  # restval joins train
        entry = {
            "filename": name,
            "imgid": i,
            "cocoid": 500 + i,
            "split": split,
            "sentences": [{"raw": c, "tokens": c.lower().split()} for c in CAPTIONS[name]],
        }
        if filepath:
            entry["filepath"] = filepath[name]
        entries.append(entry)
    return entries


def write_karpathy(root: Path) -> None:
    _images(root / "Images", NAMES)
    data = {"dataset": "flickr8k", "images": _karpathy_images()}
    (root / "dataset_flickr8k.json").write_text(json.dumps(data))


def write_coco(root: Path) -> None:
    parts = {name: ("val" if SPLIT[name] != "train" else "train") for name in NAMES}
    (root / "annotations").mkdir(parents=True)
    for part in ("train", "val"):
        names = [n for n in NAMES if parts[n] == part]
        _images(root / f"{part}2014", names)
        images = [{"id": 500 + NAMES.index(n), "file_name": n} for n in names]
        annotations = [
            {"id": 10 * NAMES.index(n) + k, "image_id": 500 + NAMES.index(n), "caption": c}
            for n in names
            for k, c in enumerate(CAPTIONS[n])
        ]
        data = {"images": images, "annotations": annotations}
        (root / "annotations" / f"captions_{part}2014.json").write_text(json.dumps(data))
    folders = {n: f"{parts[n]}2014" for n in NAMES}
    karpathy = {"dataset": "coco", "images": _karpathy_images(folders)}
    (root / "dataset_coco.json").write_text(json.dumps(karpathy))


def write_folder(root: Path) -> None:
    _images(root / "images", NAMES)
    with (root / "captions.jsonl").open("w") as handle:
        for name in NAMES:
            for caption in CAPTIONS[name]:
                handle.write(json.dumps({"image": name, "caption": caption, "split": SPLIT[name]}))
                handle.write("\n")


def write_folder_csv(root: Path) -> None:
    _images(root, NAMES)  # images beside the captions file
    with (root / "captions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption", "split"])
        writer.writerows((n, c, SPLIT[n]) for n in NAMES for c in CAPTIONS[n])


WRITERS = {
    "kaggle": write_kaggle,
    "token": write_token,
    "karpathy": write_karpathy,
    "coco": write_coco,
    "folder": write_folder,
    "folder_csv": write_folder_csv,
}
DATA_CONFIG = {"coco": "coco", "folder": "folder", "folder_csv": "folder"}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    roots = {}
    for layout, write in WRITERS.items():
        root = tmp_path_factory.mktemp(layout)
        write(root)
        roots[layout] = root
    return roots


def _content(records) -> list[tuple]:
    return [(r.image_id, r.captions, r.split, r.path.read_bytes()) for r in records]


def test_every_layout_yields_identical_records(layouts: dict[str, Path]) -> None:
    expected = [
        (n, tuple(CAPTIONS[n]), SPLIT[n], (layouts["kaggle"] / "Images" / n).read_bytes())
        for n in NAMES
    ]
    for layout, root in layouts.items():
        assert detect_layout(root) == layout.removesuffix("_csv")
        assert _content(read_dataset(root)) == expected, layout


def test_layout_can_be_forced_and_unknown_layout_is_named(layouts: dict[str, Path], tmp_path):
    # A Karpathy file next to COCO's official annotations maps the splits; alone it reads too.
    records = read_dataset(layouts["coco"], layout="karpathy")
    assert [r.split for r in records] == [SPLIT[n] for n in NAMES]
    assert records[0].path == layouts["coco"] / "train2014" / NAMES[0]
    with pytest.raises(DataError, match=r"data.layout='voc': expected auto or one of kaggle"):
        read_dataset(layouts["kaggle"], layout="voc")
    with pytest.raises(DataError, match=r"no known layout \(looked for annotations/captions_"):
        read_dataset(tmp_path)
    with pytest.raises(DataError, match=r"data.root=.*nowhere: no such directory"):
        read_dataset(tmp_path / "nowhere")


def test_restval_can_join_val_or_be_dropped(layouts: dict[str, Path]) -> None:
    records = read_dataset(layouts["karpathy"], restval="val")
    assert {r.image_id: r.split for r in records}[NAMES[5]] == "val"
    dropped = read_dataset(layouts["karpathy"], restval="drop")
    assert NAMES[5] not in {r.image_id for r in dropped}
    with pytest.raises(DataError, match=r"data.restval='test': expected one of train, val, drop"):
        read_dataset(layouts["karpathy"], restval="test")


def test_coco_without_karpathy_file_splits_val_in_halves(tmp_path: Path, caplog) -> None:
    write_coco(tmp_path)
    (tmp_path / "dataset_coco.json").unlink()
    with caplog.at_level(logging.INFO):
        records = read_dataset(tmp_path)
    splits = {r.image_id: r.split for r in records}
    assert [splits[n] for n in NAMES[:6]] == ["train"] * 6
    assert sorted(splits[n] for n in NAMES[6:]) == ["test", "val"]
    assert "val2014 is split (seed 0) into val and test halves" in caplog.text


def test_folder_without_split_column_gets_a_seeded_split(tmp_path: Path) -> None:
    _images(tmp_path / "images", NAMES)
    lines = [json.dumps({"image": n, "caption": c}) for n in NAMES for c in CAPTIONS[n]]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    records = read_dataset(tmp_path, val_size=2, test_size=1, split_seed=3)
    splits = [r.split for r in records]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (5, 2, 1)
    assert records == read_dataset(tmp_path, val_size=2, test_size=1, split_seed=3)


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
@pytest.mark.parametrize("layout", list(WRITERS))
def test_fast_dev_run_on_every_layout(layouts: dict[str, Path], layout: str, tmp_path) -> None:
    cfg = compose_train(
        tmp_path,
        [
            f"data={DATA_CONFIG.get(layout, 'flickr8k')}",
            f"data.root={layouts[layout]}",
            "data.image_size=32",
            "data.num_workers=0",
            "data.min_freq=1",
            "data.batch_size=4",
            "data.eval_batch_size=4",
            f"data.cache_dir={tmp_path / 'cache'}",
            "logger=csv",
            "trainer.fast_dev_run=true",
            "samples=0",
        ],
    )
    metrics = train(cfg)
    assert "test/CIDEr-D" in metrics
    assert json.loads((tmp_path / "run" / "test_metrics.json").read_text())["BLEU-4"] >= 0
