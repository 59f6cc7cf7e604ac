"""Precomputed region features (``data.region_features``): every layout serves the same
padded batches, keyed as ``data.region_key`` says, with bad files named and sizes resolved."""

from __future__ import annotations

import csv
import json
import logging
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from captioning.data import CaptionDataModule, DataError
from captioning.data.cache import RecordCache
from captioning.data.dataset import PadCollate, RegionItem
from captioning.data.layouts import read_dataset
from tests.helpers import compose_train

NAMES = [f"{1000 + i}_img.jpg" for i in range(12)]
SPLIT = (
    {n: "train" for n in NAMES[:6]}
    | {n: "val" for n in NAMES[6:9]}
    | {n: "test" for n in NAMES[9:]}
)
COCO_IDS = {name: 500 + i for i, name in enumerate(NAMES)}
DIM = 6


def regions_of(i: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Image i's content: features (N, D), pixel boxes (N, 4) and image (width, height)."""
    rng = np.random.default_rng(i)
    count = 2 + i % 3  # 2, 3 or 4 regions: batches need padding
    width, height = 40 + i, 30 + i
    features = rng.standard_normal((count, DIM)).astype(np.float32)
    x1 = rng.uniform(0, width / 2, count)
    y1 = rng.uniform(0, height / 2, count)
    boxes = np.stack([x1, y1, x1 + width / 3, y1 + height / 3], axis=1).astype(np.float32)
    return features, boxes, (width, height)


def expected(i: int) -> tuple[np.ndarray, np.ndarray]:
    features, boxes, (width, height) = regions_of(i)
    return features, boxes / np.array([width, height, width, height], dtype=np.float32)


def write_karpathy(root: Path, images: bool = True) -> Path:
    """COCO-style Karpathy file (cocoid + filepath), two captions per image."""
    entries = []
    for i, name in enumerate(NAMES):
        sentences = [{"raw": f"a thing number {i} ."}, {"raw": f"the {i} thing {'big ' * (i % 3)}"}]
        entries.append(
            {"filepath": "val2014", "filename": name, "cocoid": COCO_IDS[name],
             "split": SPLIT[name], "sentences": sentences}
        )  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    if images:
        (root / "val2014").mkdir(exist_ok=True)
        for i, name in enumerate(NAMES):
            Image.new("RGB", regions_of(i)[2], (10 * i, 0, 0)).save(root / "val2014" / name)
    return root


def write_kaggle(root: Path) -> Path:
    """Kaggle captions.txt, no image folder at all: records carry no COCO id."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "captions.txt").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        writer.writerows((n, f"a thing number {i}") for i, n in enumerate(NAMES))
    for split, file in (("train", "trainImages"), ("val", "devImages"), ("test", "testImages")):
        names = [n for n in NAMES if SPLIT[n] == split]
        (root / f"Flickr_8k.{file}.txt").write_text("\n".join(names) + "\n")
    return root


def key_of(name: str, mode: str = "cocoid") -> str:
    return str(COCO_IDS[name]) if mode == "cocoid" else Path(name).stem


def write_features(folder: Path, layout: str, mode: str = "cocoid") -> tuple[Path, Path | None]:
    """The fixture's regions in one layout: (data.region_features, data.region_boxes)."""
    folder.mkdir(parents=True, exist_ok=True)
    boxes_dir = folder / "boxes" if layout in ("npz_box_folder", "npy_box_folder") else None
    if boxes_dir is not None:
        boxes_dir.mkdir()
    if layout == "hdf5":
        path = folder / "coco_detections.hdf5"
        with h5py.File(path, "w") as file:
            for i, name in enumerate(NAMES):
                features, boxes, _ = regions_of(i)
                file[f"{key_of(name, mode)}_features"] = features
                file[f"{key_of(name, mode)}_boxes"] = boxes
        return path, None
    features_dir = folder / "feats"
    features_dir.mkdir()
    for i, name in enumerate(NAMES):
        features, boxes, (width, height) = regions_of(i)
        key = key_of(name, mode)
        if boxes_dir is not None:
            np.save(boxes_dir / f"{key}.npy", boxes)
        if layout == "npy_box_folder":
            np.save(features_dir / f"{key}.npy", features)
        elif layout == "npz_box_folder":  # ruotianluo's cocobu_att + cocobu_box
            np.savez_compressed(features_dir / f"{key}.npz", feat=features)
        elif layout == "npz_boxes_inside":  # bottom-up conversions with the image size
            np.savez(
                features_dir / f"{key}.npz",
                feat=features,
                boxes=boxes,
                image_w=width,
                image_h=height,
            )
        elif layout == "xmodaler":
            np.savez_compressed(features_dir / f"{key}.npz", features=features, boxes=boxes)
    return features_dir, boxes_dir


LAYOUTS = ["npz_box_folder", "npz_boxes_inside", "xmodaler", "npy_box_folder", "hdf5"]


def module(root: Path, features: Path, boxes: Path | None = None, **kwargs) -> CaptionDataModule:
    settings = {"batch_size": 4, "eval_batch_size": 3, "captions_per_image": "all",
                "cache": False, "seed": 0, "region_features": str(features),
                "region_boxes": str(boxes) if boxes else None} | kwargs  # fmt: skip
    data = CaptionDataModule(root=str(root), reader=partial(read_dataset), **settings)
    data.setup()
    return data


def all_batches(data: CaptionDataModule) -> list[dict[str, torch.Tensor]]:
    loaders = (data.train_dataloader(), data.val_dataloader(), data.test_dataloader())
    return [batch for loader in loaders for batch in loader]


@pytest.fixture(scope="module")
def karpathy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_karpathy(tmp_path_factory.mktemp("karpathy"))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path | None]]:
    return {layout: write_features(tmp_path_factory.mktemp(layout), layout) for layout in LAYOUTS}


def assert_same(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_every_layout_serves_identical_batches(karpathy: Path, layouts) -> None:
    served = {}
    for layout, (features, boxes) in layouts.items():
        data = module(karpathy, features, boxes)
        assert (data.region_dim, data.has_boxes) == (DIM, True), layout
        served[layout] = all_batches(data)
    for layout in LAYOUTS[1:]:
        assert_same(served[LAYOUTS[0]], served[layout])
    batch = served["hdf5"][0]
    assert set(batch) == {"regions", "region_mask", "boxes", "tokens", "lengths", "indices"}
    assert batch["regions"].dtype == batch["boxes"].dtype == torch.float32
    assert batch["region_mask"].dtype == torch.bool


def test_batches_hold_each_images_regions_padded_to_the_longest(karpathy: Path, layouts) -> None:
    data = module(karpathy, *layouts["npz_boxes_inside"])
    (batch,) = list(data.val_dataloader())  # the three val images: 2, 3 and 4 regions
    names = [r.image_id for r in data.records["val"]]
    counts = [len(regions_of(NAMES.index(n))[0]) for n in names]
    assert sorted(counts) == [2, 3, 4]
    assert batch["regions"].shape == (3, 4, DIM) and batch["boxes"].shape == (3, 4, 4)
    for row, index in enumerate(batch["indices"].tolist()):
        features, boxes = expected(NAMES.index(names[index]))
        count = len(features)
        assert batch["region_mask"][row].tolist() == [True] * count + [False] * (4 - count)
        assert torch.equal(batch["regions"][row, :count], torch.from_numpy(features))
        assert torch.allclose(batch["boxes"][row, :count], torch.from_numpy(boxes))
        assert not batch["regions"][row, count:].any() and not batch["boxes"][row, count:].any()
        assert batch["boxes"][row].min() >= 0.0 and batch["boxes"][row].max() <= 1.0


def test_pad_collate_pads_region_items() -> None:
    items = [
        RegionItem(torch.ones(1, 2), torch.full((1, 4), 0.5)),
        RegionItem(torch.full((3, 2), 2.0), torch.full((3, 4), 0.25)),
    ]
    batch = PadCollate(pad_id=0)(
        [(items[0], torch.tensor([1, 5, 2]), 7), (items[1], torch.tensor([1, 2]), 3)]
    )
    assert batch["region_mask"].tolist() == [[True, False, False], [True, True, True]]
    assert batch["regions"][0].tolist() == [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    assert batch["boxes"][1].tolist() == [[0.25] * 4] * 3
    assert batch["tokens"].tolist() == [[1, 5, 2], [1, 2, 0]] and batch["indices"].tolist() == [
        7,
        3,
    ]
    assert "images" not in batch


@pytest.mark.parametrize("layout", ["hdf5", "npz_box_folder"])
def test_two_workers_serve_the_batches_of_none(karpathy: Path, layouts, layout: str) -> None:
    without = all_batches(module(karpathy, *layouts[layout]))
    with_workers = all_batches(module(karpathy, *layouts[layout], num_workers=2))
    assert_same(without, with_workers)


def test_hdf5_handle_is_opened_per_process(karpathy: Path, layouts) -> None:
    data = module(karpathy, *layouts["hdf5"])
    reader = data.region_reader
    assert reader._handle is None  # closed after the setup check, before any worker forks
    data.datasets["train"][0]
    assert reader._handle is not None
    import pickle

    assert pickle.loads(pickle.dumps(reader))._handle is None  # a spawned worker opens its own


# ---------------------------------------------------------------------- keys


def test_coco_ids_come_from_the_coco_and_karpathy_readers(karpathy: Path, tmp_path: Path) -> None:
    records = read_dataset(karpathy)
    assert {r.image_id: r.coco_id for r in records} == COCO_IDS
    cache = RecordCache(karpathy, str(tmp_path), {})
    assert cache.save(records, [[["a"]]] * len(records), {}, {})
    assert [r.coco_id for r in cache.load()[0]] == [r.coco_id for r in records]
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    for part in ("train", "val"):
        names = NAMES[:6] if part == "train" else NAMES[6:]
        images = [{"id": COCO_IDS[n], "file_name": n} for n in names]
        annotations = [{"image_id": COCO_IDS[n], "caption": "a thing"} for n in names]
        (coco / "annotations" / f"captions_{part}2014.json").write_text(
            json.dumps({"images": images, "annotations": annotations})
        )
    records = read_dataset(coco, require_images=False)
    assert {r.image_id: r.coco_id for r in records} == COCO_IDS
    assert {
        r.coco_id for r in read_dataset(write_kaggle(tmp_path / "kaggle"), require_images=False)
    } == {None}


def test_key_modes(karpathy: Path, layouts, tmp_path: Path) -> None:
    by_id = all_batches(module(karpathy, *layouts["npz_boxes_inside"]))  # auto: cocoid
    stems = write_features(tmp_path / "stems", "npz_boxes_inside", mode="stem")
    assert_same(by_id, all_batches(module(karpathy, *stems, region_key="stem")))
    assert_same(
        by_id, all_batches(module(karpathy, *layouts["npz_boxes_inside"], region_key="cocoid"))
    )
    with pytest.raises(DataError, match=r"500\.npz: not found .*image key '500'.*1000_img.jpg"):
        module(karpathy, *stems)  # auto looks for COCO ids

    kaggle = write_kaggle(tmp_path / "kaggle")  # no ids, no image files: auto is the stem
    assert module(kaggle, *stems).region_index["train"][0][0] == "1000_img"
    with pytest.raises(
        DataError, match=r"data.region_key=cocoid: image 1000_img.jpg has no COCO id"
    ):
        module(kaggle, *stems, region_key="cocoid")
    with pytest.raises(ValueError, match=r"data.region_key must be one of"):
        module(kaggle, *stems, region_key="name")


# ---------------------------------------------------------------------- bad data


def test_a_missing_box_file_is_named(karpathy: Path, tmp_path: Path) -> None:
    features, boxes = write_features(tmp_path, "npz_box_folder")
    (boxes / "502.npy").unlink()
    with pytest.raises(DataError, match=r"boxes/502.npy: no boxes for image key '502'"):
        module(karpathy, features, boxes)
    assert module(karpathy, features, boxes, on_error="skip").skipped == {"missing region file": 1}


def _break(folder: Path, case: str) -> str:
    """Damage image 1001_img.jpg's (a train image) regions; the file the error must name."""
    key = "501"
    features, boxes, _ = regions_of(1)
    feats = folder / "feats"
    if case == "missing":
        (feats / f"{key}.npz").unlink()
    elif case == "unreadable":
        (feats / f"{key}.npz").write_bytes(b"not a zip archive")
    elif case == "ndim":
        np.savez(feats / f"{key}.npz", feat=features[0], boxes=boxes)
    elif case == "no regions":
        np.savez(feats / f"{key}.npz", feat=features[:0], boxes=boxes[:0])
    elif case == "box shape":
        np.savez(feats / f"{key}.npz", feat=features, boxes=boxes[:, :3])
    elif case == "box count":
        np.savez(feats / f"{key}.npz", feat=features, boxes=boxes[:1])
    elif case == "width":
        np.savez(feats / f"{key}.npz", feat=features[:, :4], boxes=boxes)
    elif case == "no feat":
        np.savez(feats / f"{key}.npz", x=features, boxes=boxes)
    elif case == "size":
        np.savez(feats / f"{key}.npz", feat=features, boxes=boxes, image_w=-4, image_h=30)
    return str(feats / f"{key}.npz")


BAD = {
    "missing": r"not found \(nor 501.npy\): no regions for image key '501' \(image 1001_img.jpg\)",
    "unreadable": r"not a readable .npz archive",
    "ndim": r"features of shape \(6,\), expected \(N, D\)",
    "no regions": r"features of shape \(0, 6\): no regions",
    "box shape": r"boxes of shape \(3, 3\), expected \(N, 4\)",
    "box count": r"1 boxes for 3 regions",
    "width": r"features of width 4, but .*500.npz has 6",
    "no feat": r"no feat or features array \(it holds boxes, x\)",
    "size": r"image_w, image_h = \(-4.0, 30.0\), expected positive sizes",  # found when loaded
}


@pytest.mark.parametrize("case", [case for case in BAD if case != "size"])
def test_bad_region_files_are_named_or_skipped(karpathy: Path, tmp_path: Path, case: str) -> None:
    features, _ = write_features(tmp_path, "npz_boxes_inside")
    named = _break(tmp_path, case)
    with pytest.raises(DataError, match=BAD[case]) as raised:
        module(karpathy, features)
    assert named in str(raised.value) and "data.on_error=skip drops such records" in str(
        raised.value
    )
    data = module(karpathy, features, on_error="skip")
    assert sum(data.skipped.values()) == 1
    assert [r.image_id for r in data.records["train"]] == [
        n for n in NAMES[:6] if n != "1001_img.jpg"
    ]
    assert len(all_batches(data)) == 5  # 10 + 6 + 6 pairs: the other images are all served


def test_bad_hdf5_datasets_are_named(karpathy: Path, tmp_path: Path) -> None:
    path, _ = write_features(tmp_path, "hdf5")
    with h5py.File(path, "a") as file:
        del file["501_features"]
        del file["502_boxes"]
        file["502_boxes"] = np.zeros((7, 4))
    with pytest.raises(DataError, match=r"coco_detections.hdf5: no dataset 501_features"):
        module(karpathy, path)
    with h5py.File(path, "a") as file:
        file["501_features"] = np.zeros((3, DIM, 1))
    with pytest.raises(
        DataError, match=r"coco_detections.hdf5: 501_features: features of shape \(3, 6, 1\)"
    ):
        module(karpathy, path)
    del_bad = module(karpathy, path, on_error="skip")
    assert del_bad.skipped == {"bad region file": 2}  # 501's features, 502's boxes
    (tmp_path / "not.h5").write_text("not HDF5")
    with pytest.raises(DataError, match=r"not.h5: cannot open it as HDF5"):
        module(karpathy, tmp_path / "not.h5")


def test_bad_npy_files_are_named(karpathy: Path, tmp_path: Path, caplog) -> None:
    features, boxes = write_features(tmp_path, "npy_box_folder")
    (features / "503.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(features / "504.npy", np.zeros((2, 3, DIM)))
    np.save(boxes / "505.npy", np.zeros((4, 5)))
    with pytest.raises(DataError, match=r"feats/503.npy: not a .npy array"):
        module(karpathy, features, boxes)
    with caplog.at_level(logging.WARNING):
        data = module(karpathy, features, boxes, on_error="skip")
    assert data.skipped == {"unreadable region file": 1, "bad region file": 2}
    assert "feats/504.npy: features of shape (2, 3, 6), expected (N, D)" in caplog.text
    assert data.region_index["test"] == [("509", (49, 39)), ("510", (50, 40)), ("511", (51, 41))]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_bad_values_fail_when_loaded_naming_the_file(
    karpathy: Path, tmp_path: Path, value: float
) -> None:
    features, _ = write_features(tmp_path, "npz_boxes_inside")
    values, boxes, _ = regions_of(1)
    values[1, 2] = value
    np.savez(features / "501.npz", feat=values.astype(np.float16), boxes=boxes)
    data = module(karpathy, features)  # headers are fine: setup passes
    train = data.datasets["train"]
    with pytest.raises(DataError, match=r"501.npz: features hold NaN or infinite values"):
        train[train.pair_image.index(1)]
    values[1, 2] = 0.0
    np.savez(features / "501.npz", feat=values, boxes=boxes * np.nan)
    with pytest.raises(DataError, match=r"501.npz: boxes hold NaN or infinite values"):
        train[train.pair_image.index(1)]
    _break(tmp_path, "size")
    with pytest.raises(DataError, match=BAD["size"]):
        train[train.pair_image.index(1)]


def test_missing_paths_are_named_by_their_key(karpathy: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.region_features: .*nowhere not found"):
        module(karpathy, tmp_path / "nowhere")
    (tmp_path / "feats.txt").write_text("")
    with pytest.raises(DataError, match=r"neither a folder of <key>.npz"):
        module(karpathy, tmp_path / "feats.txt")
    with pytest.raises(DataError, match=r"data.region_boxes: .*no_boxes is not a directory"):
        module(karpathy, tmp_path, tmp_path / "no_boxes")


# ---------------------------------------------------------------------- sizes and boxes


def test_image_size_comes_from_the_file_then_the_image_then_the_extent(
    karpathy: Path, tmp_path: Path, caplog
) -> None:
    inside = write_features(tmp_path / "inside", "npz_boxes_inside")
    box_folder = write_features(tmp_path / "box_folder", "npy_box_folder")
    # image_w / image_h win over the image file (which is here made twice as wide)
    files = write_karpathy(tmp_path / "wide")
    for i, name in enumerate(NAMES):
        width, height = regions_of(i)[2]
        Image.new("RGB", (2 * width, height)).save(files / "val2014" / name)
    from_file = all_batches(module(files, *inside))
    assert_same(from_file, all_batches(module(karpathy, *box_folder)))  # the image header
    halved = all_batches(module(files, *box_folder))  # the header of the wide images
    assert torch.allclose(halved[0]["boxes"][..., 0::2] * 2, from_file[0]["boxes"][..., 0::2])

    turned = write_karpathy(tmp_path / "turned")  # stored on their side, shown upright
    for i, name in enumerate(NAMES):
        exif = Image.Exif()
        exif[0x0112] = 6  # EXIF orientation: turn 90 degrees to show
        Image.new("RGB", regions_of(i)[2][::-1]).save(turned / "val2014" / name, exif=exif)
    assert_same(from_file, all_batches(module(turned, *box_folder)))

    bare = write_karpathy(tmp_path / "bare", images=False)  # no image files, no size
    with caplog.at_level(logging.WARNING):
        data = module(bare, *box_folder)
    assert caplog.text.count("normalised by their own largest x2, y2") == 1
    assert "12 of 12 images" in caplog.text
    (batch,) = list(data.val_dataloader())
    for row, index in enumerate(batch["indices"].tolist()):
        _, boxes, _ = regions_of(NAMES.index(data.records["val"][index].image_id))
        extent = np.array([boxes[:, 2].max(), boxes[:, 3].max()] * 2)
        assert torch.allclose(batch["boxes"][row, : len(boxes)], torch.from_numpy(boxes / extent))
        assert batch["boxes"][row, : len(boxes), 2].max() == 1.0


def test_regions_without_boxes_serve_zeros(karpathy: Path, tmp_path: Path, caplog) -> None:
    features, _ = write_features(tmp_path / "npy", "npy_box_folder")
    data = module(karpathy, features)  # .npy features and no box folder
    assert (data.has_boxes, data.region_dim) == (False, DIM)
    batches = all_batches(data)
    assert not any(batch["boxes"].any() for batch in batches)
    assert batches[0]["region_mask"].any()
    path, _ = write_features(tmp_path / "h5", "hdf5")
    with h5py.File(path, "a") as file:
        del file["503_boxes"]
    with caplog.at_level(logging.WARNING):
        data = module(karpathy, path)
    assert data.has_boxes is False and "1 of 12 images have no boxes" in caplog.text
    assert not any(batch["boxes"].any() for batch in all_batches(data))


# ---------------------------------------------------------------------- settings


def test_cache_features_is_refused_and_images_are_not_decoded(
    karpathy: Path, tmp_path: Path, layouts
) -> None:
    with pytest.raises(ValueError, match=r"data.cache_features=true .* data.region_features"):
        CaptionDataModule(root=str(karpathy), reader=None, region_features="f", cache_features=True)
    with pytest.raises(
        ValueError, match=r"data.region_boxes is set but data.region_features is not"
    ):
        CaptionDataModule(root=str(karpathy), reader=None, region_boxes="b")
    broken = write_karpathy(tmp_path / "broken")
    (broken / "val2014" / NAMES[0]).write_text("not an image")  # never decoded
    data = module(broken, *layouts["npz_boxes_inside"], check_images=True, preload=True)
    assert data.skipped == {} and len(data.records["train"]) == 6


@pytest.mark.parametrize(
    "config", ["coco", "flickr30k", "flickr8k", "folder", "shapes", "shapes_hard"]
)
def test_every_data_config_takes_the_region_keys(tmp_path: Path, config: str) -> None:
    cfg = compose_train(
        tmp_path,
        [f"data={config}", "data.root=/data", "data.region_features=feats",
         "data.region_boxes=boxes", "data.region_key=stem"],
    )  # fmt: skip
    from hydra.utils import instantiate

    data = instantiate(cfg.data)
    assert data.regions.region_features == "feats" and data.regions.region_key == "stem"
    assert data._under_root("feats") == Path("/data/feats")
