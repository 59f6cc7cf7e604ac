"""Resuming: identical weights to an uninterrupted run, SIGKILL mid-epoch, atomic saves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from captioning.resume import AtomicCheckpointIO
from captioning.train import train
from tests.helpers import bare_module, compose_train, tiny_shapes_overrides

ROOT = Path(__file__).resolve().parents[1]


class StopAfterFirstEpoch(L.Callback):
    """Ends fit after epoch 0, as a kill between epochs would (last.ckpt written at its end)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True


class Killed(Exception):
    """Stands in for a SIGKILL in-process (the run dies; only its checkpoints remain)."""


class KillAtStep(L.Callback):
    """Dies before optimizer step ``step`` (last.ckpt holds the state after step ``step - 1``)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            raise Killed


def _overrides(name: str) -> list[str]:
    return [
        *tiny_shapes_overrides(),
        f"run_name={name}",
        "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=1",
        "trainer.deterministic=true",
        "decoder.dropout=0.3",  # dropout draws from the RNG: the restored state must be exact
        "test=false",
        "samples=0",
    ]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_resumed_run_equals_an_uninterrupted_one_bitwise(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    train(compose_train(straight, [*_overrides("a"), f"hydra.run.dir={straight}/run"]))

    resumed = tmp_path / "resumed"
    stop = "+callbacks.stop._target_=tests.test_resume.StopAfterFirstEpoch"
    train(compose_train(resumed, [*_overrides("b"), stop]))
    first = torch.load(resumed / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["epoch"] == 0
    train(compose_train(resumed, [*_overrides("b"), "resume=true"]))
    final = torch.load(resumed / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["epoch"] == 1 and final["global_step"] == 2 * first["global_step"]

    # the best val CIDEr-D so far travels in the checkpoint, so the resumed run's is the max
    # over both epochs, as the straight run's is
    straight_last = torch.load(straight / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["val_cider_best"] == straight_last["val_cider_best"]
    assert final["val_cider_best"] >= first["val_cider_best"]

    expected, got = _weights(straight / "run"), final["state_dict"]
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert not list((resumed / "run" / "checkpoints").glob("*.tmp"))


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_resumed_mid_epoch_run_equals_an_uninterrupted_one_bitwise(tmp_path: Path) -> None:
    # 6 batches per epoch; killed at step 9: mid-way through epoch 1, whose batch order (seed + 1)
    # and caption choice must continue at its 4th batch, not replay its first three
    common = [*_overrides("mid"), "data.batch_size=16", "trainer.check_val_every_n_epoch=2"]
    straight = tmp_path / "straight"
    train(compose_train(straight, common))

    resumed = tmp_path / "resumed"
    every_step = "callbacks.last_checkpoint.every_n_train_steps=1"
    kill = ["+callbacks.kill._target_=tests.test_resume.KillAtStep", "+callbacks.kill.step=9"]
    with pytest.raises(Killed):
        train(compose_train(resumed, [*common, every_step, *kill]))
    killed = torch.load(resumed / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (killed["epoch"], killed["global_step"]) == (1, 9)
    train(compose_train(resumed, [*common, every_step, "resume=true"]))
    final = torch.load(resumed / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (final["epoch"], final["global_step"]) == (1, 12)

    expected, got = _weights(straight / "run"), final["state_dict"]
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_resume_without_a_checkpoint(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, [*tiny_shapes_overrides(), "run_name=new", "resume=true"])
    with pytest.raises(FileNotFoundError, match=r"resume=true: no checkpoint at .*last.ckpt.*"
                       r"resume=auto starts fresh"):  # fmt: skip
        train(cfg)
    cfg = compose_train(tmp_path, [*tiny_shapes_overrides(), "ckpt_path=/nowhere/x.ckpt"])
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=/nowhere/x.ckpt: no such checkpoint"):
        train(cfg)
    cfg = compose_train(tmp_path, [*tiny_shapes_overrides(), "resume=maybe"])
    with pytest.raises(ValueError, match=r"resume='maybe': expected true, false or auto"):
        train(cfg)


def test_run_name_gives_a_stable_folder(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["run_name=exp1"], return_hydra_config=True)
    assert cfg.hydra.run.dir == "./outputs/exp1"


def test_atomic_save_keeps_the_old_checkpoint_when_writing_fails(tmp_path: Path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}

    def dies(*args, **kwargs):
        raise KeyboardInterrupt  # killed while writing

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_sigkill_mid_epoch_then_resume_completes(tmp_path: Path) -> None:
    args = [
        sys.executable, "-m", "captioning.train", *tiny_shapes_overrides(),
        f"paths.root_dir={tmp_path}", "run_name=killed", "logger=csv", "samples=0", "test=false",
        "trainer.max_epochs=10", "callbacks.last_checkpoint.every_n_train_steps=1",
        "data.batch_size=8",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([*args, "resume=auto"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    last = tmp_path / "outputs" / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if last.is_file() and torch.load(last, weights_only=True)["global_step"] >= 3:
            break
        time.sleep(0.2)
    assert process.poll() is None, "training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert 3 <= killed_at < 120  # mid-run: 12 steps per epoch, 10 epochs
    done = subprocess.run([*args, "resume=true"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    final = torch.load(last, weights_only=True)
    assert final["epoch"] == 9 and final["global_step"] == 120


def test_best_val_cider_survives_a_checkpoint() -> None:
    before = bare_module()
    checkpoint: dict = {}
    before.on_save_checkpoint(checkpoint)
    assert "val_cider_best" not in checkpoint  # nothing validated yet: nothing to keep
    before.val_cider_best(torch.tensor(3.0))
    before.val_cider_best(torch.tensor(2.5))
    before.on_save_checkpoint(checkpoint)
    assert checkpoint["val_cider_best"] == 3.0

    after = bare_module()
    after.on_load_checkpoint(checkpoint)
    after.val_cider_best(torch.tensor(2.0))  # a worse epoch after resuming keeps the best
    assert float(after.val_cider_best.compute()) == 3.0
    older = bare_module()
    older.on_load_checkpoint({})  # a checkpoint from before the key existed loads as before
    assert not older.val_cider_best.update_called
