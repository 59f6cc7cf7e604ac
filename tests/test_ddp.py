"""Devices and precision: 2-process DDP on CPU (gloo), bf16-mixed on CPU, compile switches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from captioning.train import train
from tests.helpers import compose_train, tiny_shapes_overrides

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_ddp_cpu_training_and_gathered_val_metrics(tmp_path: Path) -> None:
    _run(
        "captioning.train", "trainer=ddp_cpu", *tiny_shapes_overrides(), "run_name=ddp",
        f"paths.root_dir={tmp_path}", "logger=csv", "samples=0", "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1", "data.eval_batch_size=4",
    )  # fmt: skip
    run = tmp_path / "outputs" / "ddp"
    metrics = json.loads((run / "final_metrics.json").read_text())
    assert {"val/CIDEr-D", "test/CIDEr-D"} <= set(metrics)
    ckpt = run / "checkpoints" / "last.ckpt"
    common = [
        f"ckpt={ckpt}",
        "split=val",
        "batch_size=4",
        "samples=0",
        f"paths.root_dir={tmp_path}",
    ]
    evals = [
        [*common, f"hydra.run.dir={tmp_path}/single"],
        [*common, f"hydra.run.dir={tmp_path}/ddp", "trainer.accelerator=cpu",
         "trainer.devices=2", "trainer.strategy=ddp"],
    ]  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as pool:  # independent: side by side
        list(pool.map(lambda arguments: _run("captioning.eval", *arguments), evals))
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp.keys() == single.keys()
    for key in single:  # every image scored once over both ranks: the same corpus scores
        assert ddp[key] == pytest.approx(single[key], abs=1e-12), key
    predictions = [
        json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("single", "ddp")
    ]
    assert predictions[0] == predictions[1] and len(predictions[0]) == 16


def test_bf16_mixed_step_on_cpu(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path, [*tiny_shapes_overrides(), "trainer.precision=bf16-mixed",
                   "trainer.fast_dev_run=true", "samples=0"]
    )  # fmt: skip
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert "test/CIDEr-D" in metrics


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_compile_and_channels_last_switches(tmp_path: Path, monkeypatch) -> None:
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    cfg = compose_train(
        tmp_path, [*tiny_shapes_overrides(), "compile=true", "channels_last=true",
                   "trainer.fast_dev_run=true", "samples=0", "test=false"]
    )  # fmt: skip
    train(cfg)
    assert [type(m).__name__ for m in compiled] == ["Captioner"]


def test_in_place_compile_keeps_checkpoint_keys() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    keys = list(model.state_dict())
    model.compile()
    assert list(model.state_dict()) == keys  # torch.compile(model) would prefix _orig_mod.
