"""Every preset in conf/experiment/ composes and runs one batch through the real entry point."""

import json
from pathlib import Path

import pytest

from captioning.train import train
from tests.helpers import compose_train, tiny_shapes_overrides

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


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
@pytest.mark.parametrize("name", PRESETS)
def test_preset_fast_dev_run(name: str, tmp_path: Path) -> None:
    overrides = [f"experiment={name}", "trainer.fast_dev_run=true", "samples=0"]
    if not name.endswith("_shapes"):  # the real-data presets, offline on tiny Shapes
        overrides += ["data=shapes", "encoder.pretrained=false", "trainer.accelerator=cpu",
                      "trainer.precision=32-true", "data.batch_size=4", "data.eval_batch_size=4"]  # fmt: skip
    cfg = compose_train(tmp_path, [*overrides, *tiny_shapes_overrides()])
    train(cfg)
    scores = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert "CIDEr-D" in scores and "grounding" in scores
