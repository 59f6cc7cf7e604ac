"""Every preset in conf/experiment/ composes and runs one batch through the real entry point."""

import json
from pathlib import Path

import pytest

from captioning.train import train
from tests.helpers import compose_config, compose_train, tiny_shapes_overrides

PRESETS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("*.yaml"))


def test_presets_exist_with_a_source_comment() -> None:
    assert {
        "show_attend_tell",
        "cnn_transformer",
        "vit_transformer",
        "bilinear_lstm",
        "adaptive_attention",
    } <= set(PRESETS)
    for name in PRESETS:
        if not name.endswith("_shapes"):
            assert f"{name}_shapes" in PRESETS, f"{name} has no CPU Shapes variant"
        text = (Path(__file__).parents[1] / "conf" / "experiment" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_\n#") and "python -m captioning.train" in text


def _on_regions(name: str) -> bool:
    text = (Path(__file__).parents[1] / "conf" / "experiment" / f"{name}.yaml").read_text()
    return "override /encoder: regions" in text


@pytest.fixture(scope="module")
def tiny_regions(tmp_path_factory: pytest.TempPathFactory, shapes_dir: Path) -> Path:
    """The tiny Shapes set's oracle-box regions (a random CNN's: enough for one batch)."""
    from captioning.extract.cli import extract

    root = tmp_path_factory.mktemp("regions")
    data = [f"data.root={shapes_dir}", *tiny_shapes_overrides(), f"data.cache_dir={root / 'c'}"]
    extract(compose_config("extract", root, [*data, f"out={root / 'regions'}"]))
    return root / "regions"


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
@pytest.mark.parametrize("name", PRESETS)
def test_preset_fast_dev_run(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    overrides = [f"experiment={name}", "trainer.fast_dev_run=true", "samples=0"]
    regions = _on_regions(name)
    if not name.endswith("_shapes"):  # the real-data presets, offline on tiny Shapes
        overrides += ["data=shapes", "trainer.accelerator=cpu", "trainer.precision=32-true",
                      "data.batch_size=4", "data.eval_batch_size=4"]  # fmt: skip
        overrides += ["data.region_boxes=null"] if regions else ["encoder.pretrained=false"]
    if regions:
        overrides.append(f"data.region_features={request.getfixturevalue('tiny_regions')}")
    cfg = compose_train(tmp_path, [*overrides, *tiny_shapes_overrides()])
    train(cfg)
    scores = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert "CIDEr-D" in scores and "grounding" in scores
