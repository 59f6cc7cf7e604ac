"""The whole region path on Shapes with no detector weights: extract the oracle boxes' regions,
train a region model on them, score it (box-level grounding), caption raw images with the
extraction run on the fly, and draw each word's attention over the boxes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from captioning.caption import caption_images
from captioning.eval import evaluate
from captioning.extract.cli import extract
from captioning.module import CaptioningModule
from captioning.train import train
from tests.helpers import compose_config, compose_train, tiny_shapes_overrides

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def region_run(tmp_path_factory: pytest.TempPathFactory, shapes_dir: Path) -> Path:
    """Regions extracted with one distractor per image, then one epoch of a region model."""
    root = tmp_path_factory.mktemp("region_run")
    regions = root / "regions"
    data = [f"data.root={shapes_dir}", *tiny_shapes_overrides(), f"data.cache_dir={root / 'c'}"]
    extract(compose_config("extract", root, [*data, f"out={regions}", "extract.distractors=1"]))
    overrides = [
        *data, f"data.region_features={regions}", "encoder=regions", "encoder.box_embed=true",
        "encoder.out_dim=32", "trainer.max_epochs=1", "samples=0",
    ]  # fmt: skip
    train(compose_train(root, overrides))
    return root


def test_training_on_regions_keeps_the_extraction_and_scores_box_grounding(
    region_run: Path,
) -> None:
    ckpt = region_run / "run" / "checkpoints" / "last.ckpt"
    module = CaptioningModule.from_checkpoint(str(ckpt))
    extraction = module.hparams.config["extraction"]
    assert extraction == json.loads((region_run / "regions" / "extract.json").read_text())
    assert module.hparams.model["encoder"]["feature_dim"] == 128  # small_cnn's width, filled
    scores = json.loads((region_run / "run" / "test_metrics.json").read_text())
    assert 0.0 <= scores["grounding"] <= 1.0 and "object_F1" in scores


def test_eval_of_a_region_checkpoint(region_run: Path, tmp_path: Path) -> None:
    ckpt = region_run / "run" / "checkpoints" / "last.ckpt"
    overrides = [f"ckpt={ckpt}", "decoding.beam_size=2", "report=true", "report_images=5"]
    results = evaluate(compose_config("eval", tmp_path, overrides))
    assert {"CIDEr-D", "grounding", "object_F1"} <= set(results)
    page = (tmp_path / "eval" / "report" / "report.html").read_text()
    data = json.loads(page.split('id="report-data">')[1].split("</script>")[0])
    assert [e["index"] for e in data["entries"]] == [0, 1, 2, 3, 4]  # report_images=5
    for entry in data["entries"]:  # attention over the image's own boxes, no grid
        assert entry["grid"] is None and entry["image"] is not None
        boxes = torch.tensor(entry["boxes"])
        assert boxes.shape[1] == 4 and boxes.min() >= 0 and boxes.max() <= 1
        assert all(len(row) == len(boxes) for row in entry["attention"])
        assert len(entry["attention"]) == len(entry["words"])


def test_caption_extracts_raw_images_on_the_fly_and_draws_boxes(
    region_run: Path, shapes_dir: Path, tmp_path: Path, capsys
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("test_00000.png", "test_00001.png"):
        Image.open(shapes_dir / "Images" / name).save(images / name)
    Image.new("RGB", (64, 64)).save(images / "unknown.png")  # no oracle boxes: skipped
    ckpt = region_run / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_config("caption", tmp_path, [f"ckpt={ckpt}", f"images={images}"])
    records = caption_images(cfg)
    assert [r["image"] for r in records] == ["test_00000.png", "test_00001.png"]
    assert all(r["captions"][0] for r in records)
    for record in records:
        with Image.open(record["figure"]) as figure:
            assert figure.width == 6 * 160


def test_caption_matches_the_regions_the_files_hold(region_run: Path, shapes_dir: Path) -> None:
    """The on-the-fly extraction gives the features and boxes the extracted file holds."""
    import numpy as np

    from captioning.extract import RegionExtractor

    settings = json.loads((region_run / "regions" / "extract.json").read_text())
    extractor = RegionExtractor.from_settings(settings, "cpu")
    objects = json.loads((shapes_dir / "boxes.json").read_text())["test_00000.png"]
    boxes = np.asarray([o["box"] for o in objects], dtype=np.float64)
    (found,) = extractor([shapes_dir / "Images" / "test_00000.png"], [boxes])
    stored = np.load(region_run / "regions" / "test_00000.npz")
    np.testing.assert_allclose(found.boxes, stored["boxes"], rtol=1e-6)
    torch.testing.assert_close(torch.from_numpy(found.feat), torch.from_numpy(stored["feat"]))


@pytest.mark.parametrize(
    ("attention", "decoder"),
    [("additive", "gru"), ("dot", "transformer"), ("scaled_dot", "updown"),
     ("bilinear", "aoa"), ("multihead", "meshed"), ("adaptive", "lstm")],
)  # fmt: skip
def test_every_decoder_trains_on_regions_through_train(
    attention: str, decoder: str, region_run: Path, shapes_dir: Path, tmp_path: Path
) -> None:
    # each decoder once, the attention modules rotating (all 36 pairs were run once by hand)
    overrides = [
        f"data.root={shapes_dir}", *tiny_shapes_overrides(), f"data.cache_dir={tmp_path / 'c'}",
        f"data.region_features={region_run / 'regions'}", "encoder=regions",
        f"attention={attention}", f"decoder={decoder}", "trainer.fast_dev_run=true", "samples=0",
    ]  # fmt: skip
    train(compose_train(tmp_path, overrides))
    scores = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert {"CIDEr-D", "grounding", "object_F1"} <= set(scores)
