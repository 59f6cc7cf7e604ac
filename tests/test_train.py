"""End to end through the real Hydra config: training, test metrics, checkpoints."""

import json
from pathlib import Path

import pytest
import torch

from captioning.module import CaptioningModule
from captioning.train import train
from tests.conftest import compose_train, tiny_shapes_overrides


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
