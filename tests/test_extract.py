"""``python -m captioning.extract``: region files from oracle boxes and from a torchvision
detector, the pooling, resuming, the folder rules, bad images and missing weights."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from hydra.utils import instantiate
from torchvision.ops import roi_align

from captioning.data.formats import DataError
from captioning.data.images import load_image
from captioning.extract import (
    ExtractFolderError,
    ExtractSettings,
    RegionExtractor,
    region_key,
)
from captioning.extract.cli import extract
from captioning.extract.detectors import build_detector, select_regions, weights_file
from tests.helpers import compose_config, tiny_shapes_overrides

SMALL_DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"
ARRAYS = {"feat", "boxes", "image_w", "image_h", "scores", "labels"}


def _config(tmp_path: Path, data: Path | list[str], *overrides: str, out: Path | None = None):
    """The extract config over the tiny Shapes set in ``data``, or over ``data`` overrides."""
    if isinstance(data, Path):
        data = [f"data.root={data}", *tiny_shapes_overrides()]
    return compose_config(
        "extract",
        tmp_path,
        [
            *data,
            f"data.cache_dir={tmp_path / 'cache'}",
            f"out={out or tmp_path / 'regions'}",
            *overrides,
        ],
    )


def _annotations(shapes_dir: Path) -> dict[str, list[dict]]:
    return json.loads((shapes_dir / "boxes.json").read_text())


def _tiny_set(tmp_path: Path, shapes_dir: Path, per_split: int = 2) -> Path:
    """A copy of the first ``per_split`` images of each split (with their captions and boxes)."""
    root = tmp_path / "tiny"
    (root / "Images").mkdir(parents=True)
    names = []
    for split_file in ("Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt",
                       "Flickr_8k.testImages.txt"):  # fmt: skip
        chosen = (shapes_dir / split_file).read_text().split()[:per_split]
        (root / split_file).write_text("\n".join(chosen) + "\n")
        names += chosen
    for name in names:
        shutil.copy(shapes_dir / "Images" / name, root / "Images" / name)
    rows = (shapes_dir / "captions.txt").read_text().splitlines()
    kept = [rows[0], *(r for r in rows[1:] if r.split(",")[0] in names)]
    (root / "captions.txt").write_text("\n".join(kept) + "\n")
    boxes = {n: b for n, b in _annotations(shapes_dir).items() if n in names}
    (root / "boxes.json").write_text(json.dumps(boxes))
    return root


def _flickr(root: Path) -> list[str]:
    """Data overrides reading ``root`` (a Shapes-like copy) as Flickr8k: no generator."""
    return [
        f"data.root={root}",
        "data=flickr8k",
        "data.boxes_file=boxes.json",
        "data.image_size=64",
    ]


def test_oracle_boxes_are_the_annotated_boxes(tmp_path: Path, shapes_dir: Path) -> None:
    counts = extract(_config(tmp_path, shapes_dir, "extract.shuffle=false"))
    out = tmp_path / "regions"
    annotations = _annotations(shapes_dir)
    assert counts == {"images": len(annotations), "written": len(annotations), "skipped": 0,
                      "empty": 0, "bad": {}}  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["extract.json", *(f"{Path(n).stem}.npz" for n in annotations)]
    )
    for name, objects in list(annotations.items())[:20]:
        with np.load(out / f"{Path(name).stem}.npz") as regions:
            assert set(regions.files) == ARRAYS
            expected = np.asarray([o["box"] for o in objects], dtype=np.float32)
            np.testing.assert_array_equal(regions["boxes"], expected)
            assert regions["boxes"].dtype == np.float32 and regions["feat"].dtype == np.float32
            assert regions["feat"].shape == (len(objects), 128)  # small_cnn's width
            assert int(regions["image_w"]) == int(regions["image_h"]) == 64
            np.testing.assert_array_equal(regions["scores"], np.ones(len(objects), np.float32))
            np.testing.assert_array_equal(regions["labels"], np.arange(len(objects)))
    settings = json.loads((out / "extract.json").read_text())
    assert settings["writer"] == "captioning.extract" and settings["detector"] == "boxes"
    assert settings["encoder"]["_target_"] == "captioning.models.SmallCNN"
    assert {"jitter", "distractors", "shuffle", "image_size", "roi_size", "dtype", "seed",
            "version", "weights"} <= set(settings)  # fmt: skip
    assert "min_score" not in settings  # a detector=torchvision setting


def test_jitter_is_bounded_and_distractors_are_added(tmp_path: Path, shapes_dir: Path) -> None:
    extract(_config(tmp_path, shapes_dir, "extract.jitter=0.1", "extract.distractors=3",
                    "extract.dtype=float16"))  # fmt: skip
    out = tmp_path / "regions"
    orders = set()
    moved = 0.0
    for name, objects in _annotations(shapes_dir).items():
        with np.load(out / f"{Path(name).stem}.npz") as regions:
            boxes, labels = regions["boxes"], regions["labels"]
            assert regions["feat"].dtype == np.float16 and len(regions["feat"]) == len(objects) + 3
        assert sorted(labels.tolist()) == [-1, -1, -1, *range(len(objects))]
        orders.add(tuple(labels.tolist()))
        for label, box in zip(labels, boxes, strict=True):
            assert 0 <= box[0] < box[2] <= 64 and 0 <= box[1] < box[3] <= 64
            if label < 0:
                continue
            annotated = np.asarray(objects[label]["box"], dtype=np.float64)
            sides = np.tile(annotated[2:] - annotated[:2], 2)
            assert np.all(np.abs(box - annotated) <= 0.1 * sides + 1e-4)
            moved = max(moved, float(np.max(np.abs(box - annotated) / sides)))
    assert moved > 0.05  # jittered, not only clipped
    assert len(orders) > 5  # shuffled: objects do not always come first


def test_features_are_roi_align_on_the_encoders_map(tmp_path: Path, shapes_dir: Path) -> None:
    # 96 px for the encoder while the files are 64 px: boxes are scaled to the resized image
    extract(_config(tmp_path, shapes_dir, "extract.image_size=96", "extract.distractors=2"))
    out = tmp_path / "regions"
    settings = json.loads((out / "extract.json").read_text())
    extractor = RegionExtractor.from_settings(settings, device="cpu")
    torch.manual_seed(settings["seed"])  # the extractor's random weights come from its seed
    fresh = instantiate(settings["encoder"]).eval()
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, extractor.encoder.state_dict()[name]), name

    path = shapes_dir / "Images" / "train_00007.png"
    with np.load(out / "train_00007.npz") as regions:
        feat, boxes = regions["feat"], regions["boxes"]
    image = load_image(path, 96).float().div(255)[None]  # (1, 3, 96, 96)
    with torch.no_grad():
        tokens = fresh(image)  # (1, 64, 128)
    h, w = fresh.grid(96, 96)
    feature_map = tokens.transpose(1, 2).reshape(1, -1, h, w)  # (1, 128, 8, 8)
    by_hand = roi_align(
        feature_map, [torch.from_numpy(boxes) * 96 / 64], output_size=7,
        spatial_scale=h / 96, sampling_ratio=2, aligned=True,
    ).mean(dim=(2, 3))  # fmt: skip  # (N, 128)
    np.testing.assert_allclose(feat, by_hand.numpy(), atol=1e-5)

    # the API gives the same regions from the file, and from the decoded image
    annotated = np.asarray([o["box"] for o in _annotations(shapes_dir)["train_00007.png"]])
    (from_file,) = extractor([path], [annotated])
    (from_tensor,) = extractor([load_image(path, None)], [annotated], keys=["train_00007"])
    for regions in (from_file, from_tensor):
        np.testing.assert_array_equal(regions.boxes, boxes)
        np.testing.assert_allclose(regions.feat, feat, atol=1e-5)
        assert (regions.image_w, regions.image_h) == (64, 64)


def test_a_second_run_resumes_and_other_settings_are_refused(
    tmp_path: Path, shapes_dir: Path
) -> None:
    out = tmp_path / "regions"
    extract(_config(tmp_path, shapes_dir))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "train_00003.npz").unlink()
    counts = extract(_config(tmp_path, shapes_dir))
    assert counts["written"] == 1 and counts["skipped"] == len(stamps) - 2
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert after.keys() == stamps.keys()
    assert {n for n in stamps if after[n] != stamps[n]} == {"train_00003.npz"}

    with pytest.raises(ExtractFolderError) as refused:
        extract(_config(tmp_path, shapes_dir, "extract.jitter=0.1", "encoder.grid_size=4"))
    message = str(refused.value)
    assert "jitter: 0.0 -> 0.1" in message and "encoder.grid_size: 8 -> 4" in message
    assert "extract.overwrite=true" in message
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == after  # nothing changed

    counts = extract(_config(tmp_path, shapes_dir, "extract.jitter=0.1", "extract.overwrite=true"))
    assert counts["written"] == len(stamps) - 1 and counts["skipped"] == 0
    assert json.loads((out / "extract.json").read_text())["jitter"] == 0.1
    assert all(p.stat().st_mtime_ns != after[p.name] for p in out.iterdir())


def test_a_folder_it_did_not_write_is_refused(tmp_path: Path, shapes_dir: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExtractFolderError, match=r"not written by captioning.extract"):
        extract(_config(tmp_path, shapes_dir, out=out))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    extract(_config(tmp_path, shapes_dir, out=tmp_path / "regions"))
    (tmp_path / "regions" / "notes.txt").write_text("mine")
    with pytest.raises(ExtractFolderError, match=r"did not write \(notes.txt\)"):
        extract(_config(tmp_path, shapes_dir, "extract.overwrite=true", "extract.jitter=0.1"))
    assert json.loads((tmp_path / "regions" / "extract.json").read_text())["jitter"] == 0.0


def test_a_torchvision_detector_with_random_weights(tmp_path: Path, shapes_dir: Path) -> None:
    root = _tiny_set(tmp_path, shapes_dir)
    counts = extract(
        _config(
            tmp_path, _flickr(root), "extract.detector=torchvision",
            "extract.pretrained=false", f"extract.model={SMALL_DETECTOR}",
            "extract.min_regions=4", "extract.max_regions=6", "extract.batch_size=4",
            "encoder=resnet18", "encoder.grid_size=4",
        )
    )  # fmt: skip
    assert counts["written"] == 6 and counts["empty"] == 0
    out = tmp_path / "regions"
    for file in out.glob("*.npz"):
        with np.load(file) as regions:
            # random scores are all below min_score 0.2: min_regions boxes, best first
            assert regions["feat"].shape == (4, 512) and regions["labels"].dtype == np.int64
            assert np.all(np.diff(regions["scores"]) <= 0)
            boxes = regions["boxes"]
            assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] <= 64)
    settings = json.loads((out / "extract.json").read_text())
    assert settings["model"] == SMALL_DETECTOR and settings["weights"]["detector"]
    assert {"min_score", "max_regions", "min_regions", "nms_iou"} <= set(settings)
    assert "jitter" not in settings


def test_selection_is_class_agnostic_with_a_floor_and_a_cap() -> None:
    boxes = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 10.5], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]],
        dtype=torch.float32,
    )  # the first two: one object found as two classes
    scores = torch.tensor([0.9, 0.8, 0.5, 0.1, 0.05])
    assert select_regions(boxes, scores, 0.2, 0, 36, 0.3).tolist() == [0, 2]
    assert select_regions(boxes, scores, 0.2, 3, 36, 0.3).tolist() == [0, 2, 3]
    assert select_regions(boxes, scores, 0.0, 0, 2, 0.3).tolist() == [0, 2]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty torch cache and no network: what this machine and CI have."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)

    def unreachable(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_pretrained_without_cached_weights_says_where_to_put_them(no_network: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as error:
        build_detector("fasterrcnn_resnet50_fpn_v2", True, {})
    assert time.perf_counter() - start < 5  # at once, not after a download's retries
    message = str(error.value)
    weights = torchvision.models.get_model_weights("fasterrcnn_resnet50_fpn_v2").DEFAULT
    assert str(no_network / Path(weights.url).name) in message and weights.url in message
    assert "extract.pretrained=false" in message


def test_pretrained_weights_load_from_the_torch_cache(no_network: Path) -> None:
    torch.manual_seed(1)
    saved = torchvision.models.get_model(SMALL_DETECTOR, weights=None, weights_backbone=None)
    weights = torchvision.models.get_model_weights(SMALL_DETECTOR).DEFAULT
    assert weights_file(weights).parent == no_network
    no_network.mkdir(parents=True)
    torch.save(saved.state_dict(), weights_file(weights))
    loaded = build_detector(SMALL_DETECTOR, True, {})
    # pretrained builds freeze BatchNorm (no num_batches_tracked): every weight they hold
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, saved.state_dict()[name]), name

    settings = ExtractSettings(detector="torchvision", model=SMALL_DETECTOR, image_size=64)
    encoder = {"_target_": "captioning.models.SmallCNN", "channels": [8, 16], "grid_size": 4}
    extractor = RegionExtractor(settings, encoder, device="cpu")
    record = extractor.record()
    assert record["pretrained"] and record["categories"][1] == "person"
    (regions,) = extractor([torch.randint(0, 256, (3, 48, 80), dtype=torch.uint8)])
    assert (regions.image_w, regions.image_h) == (80, 48) and regions.feat.shape[1] == 16
    assert 10 <= len(regions.boxes) <= 36 and regions.labels.max() < len(record["categories"])
    assert RegionExtractor.from_settings(record, device="cpu").weights == extractor.weights


def test_a_corrupt_image_is_named_or_skipped(tmp_path: Path, shapes_dir: Path) -> None:
    root = _tiny_set(tmp_path, shapes_dir)
    bad = root / "Images" / "train_00001.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    with pytest.raises(DataError, match=r"train_00001.png: cannot decode image"):
        extract(_config(tmp_path, _flickr(root)))
    counts = extract(_config(tmp_path, _flickr(root), "data.on_error=skip"))
    assert counts["written"] == 5 and counts["bad"] == {"unreadable image": 1}
    assert not (tmp_path / "regions" / "train_00001.npz").exists()


def test_boxes_need_a_boxes_file(tmp_path: Path, shapes_dir: Path) -> None:
    root = _tiny_set(tmp_path, shapes_dir)
    (root / "boxes.json").unlink()
    with pytest.raises(DataError, match=r"no boxes.json; set extract.detector=torchvision"):
        extract(_config(tmp_path, _flickr(root)))


def test_region_keys_and_settings_checks() -> None:
    path = Path("/data/coco/val2014/COCO_val2014_000000000042.jpg")
    assert region_key(SimpleNamespace(path=path)) == "COCO_val2014_000000000042"
    assert region_key(SimpleNamespace(path=path, coco_id=42)) == "42"
    assert region_key(SimpleNamespace(path=path, coco_id=42), "stem") == path.stem
    with pytest.raises(DataError, match=r"extract.key=coco_id"):
        region_key(SimpleNamespace(path=path), "coco_id")
    with pytest.raises(ValueError, match=r"extract.jitter must be in \[0, 0.5\)"):
        ExtractSettings(jitter=0.5)
    with pytest.raises(ValueError, match=r"extract.min_regions must be in \[0, max_regions\]"):
        ExtractSettings(min_regions=40)
    with pytest.raises(ValueError, match=r"unknown extract setting\(s\) extract.jiter"):
        ExtractSettings.from_options({"jiter": 0.1})
    with pytest.raises(ValueError, match=r"extract.model='yolo' is no torchvision detection"):
        build_detector("yolo", False, {})


def test_the_documented_shapes_commands_run(tmp_path: Path, shapes_dir: Path) -> None:
    from tests.test_readme import ROOT, readme_commands

    documented = [
        arguments
        for _, entry, arguments in readme_commands((ROOT / "docs" / "data.md").read_text())
        if entry == "extract"
        and not any(a.startswith("data=") or a == "extract.detector=torchvision" for a in arguments)
    ]
    assert len(documented) >= 2
    for number, arguments in enumerate(documented):
        out = tmp_path / f"out{number}"
        kept = [a for a in arguments if not a.startswith("out=")]
        counts = extract(_config(tmp_path, shapes_dir, *kept, out=out))
        assert counts["written"] == counts["images"] > 0 and (out / "extract.json").is_file()


def test_the_settings_defaults_are_the_configs(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    cfg = compose_config("extract", tmp_path, ["out=x"])
    options = OmegaConf.to_container(cfg.extract, resolve=True)
    assert ExtractSettings.from_options(options) == ExtractSettings(image_size=64)  # Shapes' side


def test_regions_pooled_from_a_trained_captioners_encoder(
    tmp_path: Path, shapes_dir: Path, tiny_run: Path
) -> None:
    from captioning.checkpoint import read_checkpoint
    from captioning.extract import RegionExtractor

    ckpt = tiny_run / "run" / "checkpoints" / "last.ckpt"
    cfg = _config(tmp_path, shapes_dir, f"extract.encoder_from={ckpt}")
    extract(cfg)
    settings = json.loads((tmp_path / "regions" / "extract.json").read_text())
    checkpoint = read_checkpoint(ckpt)
    assert settings["encoder_from"] == str(ckpt)
    assert settings["encoder"] == checkpoint["hyper_parameters"]["model"]["encoder"]
    extractor = RegionExtractor.from_settings(settings, "cpu")
    trained = checkpoint["state_dict"]
    for key, value in extractor.encoder.state_dict().items():
        assert torch.equal(value, trained[f"captioner.encoder.{key}"]), key
