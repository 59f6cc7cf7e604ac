"""End to end through the real Hydra config: training, test metrics, checkpoints."""

import json
from pathlib import Path

import pytest
import torch

from captioning.eval import evaluate
from captioning.module import CaptioningModule
from captioning.train import train
from tests.helpers import compose_config, compose_train, tiny_shapes_overrides


def test_fast_dev_run_through_hydra_config(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path, [*tiny_shapes_overrides(), "trainer.fast_dev_run=true", "samples=2"]
    )
    metrics = train(cfg)
    assert (tmp_path / "data" / "shapes" / "captions.txt").is_file()  # generated on first use
    scores = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D", "object_F1"} <= set(
        scores
    )
    assert metrics["test/CIDEr-D"] == pytest.approx(scores["CIDEr-D"])


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_short_run_learns_and_checkpoint_rebuilds_the_model(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path,
        [
            *tiny_shapes_overrides(),
            "trainer.max_epochs=2",
            "trainer.check_val_every_n_epoch=1",
            "experiment=show_attend_tell_shapes",
            "samples=0",
        ],
    )
    metrics = train(cfg)
    assert "val/CIDEr-D" in metrics and "train/loss" in metrics
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["vocab"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert hparams["loss"]["attention_reg"] == 1.0
    assert hparams["config"]["data"]["generator"]["num_train"] == 96
    model = CaptioningModule.from_checkpoint(str(last)).eval()
    state = checkpoint["state_dict"]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, state[name])


def test_wrong_checkpoint_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match=r"other.ckpt: not a captioning checkpoint"):
        CaptioningModule.from_checkpoint(str(path))
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"other.ckpt: not a readable checkpoint"):
        CaptioningModule.from_checkpoint(str(path))


def test_eval_writes_metrics_and_coco_predictions(tiny_run: Path, tmp_path: Path) -> None:
    ckpt = tiny_run / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_config(
        "eval", tiny_run, [f"ckpt={ckpt}", "decoding.beam_size=2", f"hydra.run.dir={tmp_path}"]
    )
    scores = evaluate(cfg)
    written = json.loads((tiny_run / "eval" / "metrics.json").read_text())
    assert written == pytest.approx(scores)
    assert {"BLEU-4", "CIDEr-D", "object_F1", "grounding", "grounding_noun"} <= set(written)
    assert 0.0 <= written["grounding"] <= 1.0
    predictions = json.loads((tiny_run / "eval" / "predictions.json").read_text())
    assert len(predictions) == 16
    assert set(predictions[0]) == {"image_id", "caption"}
    assert predictions[0]["image_id"].startswith("test_")


def test_eval_on_val_split_and_bad_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    ckpt = tiny_run / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_config("eval", tmp_path, [f"ckpt={ckpt}", "split=val", "decoding.beam_size=1"])
    evaluate(cfg)
    predictions = json.loads((tmp_path / "eval" / "predictions.json").read_text())
    assert {p["image_id"][:4] for p in predictions} == {"val_"}
    cfg = compose_config("eval", tmp_path, [f"ckpt={tmp_path / 'missing.ckpt'}"])
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*missing.ckpt"):
        evaluate(cfg)
