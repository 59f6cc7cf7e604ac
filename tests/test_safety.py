"""Runs never overwrite a run, never save a diverged model, and check their inputs up front."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captioning.callbacks import DivergenceError, StopOnDivergence
from captioning.checks import ConfigError, check_encoder_input
from captioning.eval import evaluate
from captioning.files import DiskFullError, write_json
from captioning.models import SmallCNN
from captioning.resume import AtomicCheckpointIO, RunFolderExists, check_run_folder
from captioning.train import train
from tests.helpers import compose_config, compose_train, tiny_shapes_overrides

TINY = [*tiny_shapes_overrides(), "logger=csv", "samples=0"]


def _train_cli(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "captioning.train", *TINY, *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


# ---------------------------------------------------------------------- one run per folder


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_a_second_fresh_start_in_a_run_folder_stops_and_keeps_the_run(tmp_path: Path) -> None:
    first = _train_cli(tmp_path, "run_name=mine", "trainer.max_epochs=1", "test=false")
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / "outputs" / "mine"
    info = json.loads((run / "run.json").read_text())  # where the result came from
    assert info["command"].startswith("python -m captioning.train ")
    assert "run_name=mine" in info["command"] and "-core " in info["machine"] and info["commit"]
    kept = {
        path: path.read_bytes()
        for path in [run / "checkpoints" / "last.ckpt", run / "csv" / "metrics.csv", run / "run.json",
                     *sorted((run / ".hydra").iterdir())]
    }  # fmt: skip

    again = _train_cli(tmp_path, "run_name=mine", "trainer.max_epochs=2", "test=false")
    assert again.returncode != 0
    message = again.stderr
    assert f"{run} already holds a run" in message
    for choice in ("resume=true", "resume=auto", "run_name=NAME", "overwrite=true"):
        assert choice in message
    for path, content in kept.items():  # the checkpoint, the logs and the recorded config
        assert path.read_bytes() == content, path
    assert "trainer.max_epochs=1" in (run / ".hydra" / "overrides.yaml").read_text()

    resumed = _train_cli(
        tmp_path, "run_name=mine", "trainer.max_epochs=2", "test=false", "resume=auto"
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 1  # continued to the second epoch

    replaced = _train_cli(
        tmp_path, "run_name=mine", "trainer.max_epochs=1", "test=false", "overwrite=true"
    )
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not list((run / "checkpoints").glob("*-v1.ckpt"))


def test_run_folder_check_allows_continuing_and_fresh_folders(tmp_path: Path) -> None:
    check_run_folder(tmp_path / "new", resume=False, ckpt_path=None)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "train.log").write_text("Hydra writes these before any run\n")
    check_run_folder(tmp_path, resume=False, ckpt_path=None)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(RunFolderExists, match=r"checkpoints/last.ckpt"):
        check_run_folder(tmp_path, resume=False, ckpt_path=None)
    with pytest.raises(RunFolderExists):
        check_run_folder(tmp_path, resume=False, ckpt_path=str(tmp_path / "elsewhere.ckpt"))
    for resume, ckpt in ((True, None), ("auto", None), (False, "last")):
        check_run_folder(tmp_path, resume=resume, ckpt_path=ckpt)
    check_run_folder(tmp_path, False, str(tmp_path / "checkpoints" / "last.ckpt"))
    check_run_folder(tmp_path, False, None, overwrite=True)


# ---------------------------------------------------------------------- divergence


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_divergence_stops_training_and_saves_no_diverged_weights(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path,
        [*TINY, "optimizer.lr=1e4", "data.batch_size=16", "trainer.max_epochs=10",
         "trainer.check_val_every_n_epoch=1", "divergence.check_every_n_steps=1"],
    )  # fmt: skip
    with pytest.raises(DivergenceError) as caught:
        train(cfg)
    message = str(caught.value)
    # BatchNorm's running variance overflows a few steps before the loss turns NaN
    assert re.match(r"training diverged: (the loss became nan|\d+ weight tensors)", message)
    assert "learning rate" in message
    assert "No checkpoint of the diverged weights was written" in message
    step = int(message.split("at step ")[1].split()[0])
    last = float(message.split("last finite loss was ")[1].split()[0])
    assert math.isfinite(last) and step > 0
    run = tmp_path / "run"
    assert not (run / "final_metrics.json").exists()
    for path in (run / "checkpoints").glob("*.ckpt"):
        state = torch.load(path, weights_only=True)
        assert state["global_step"] <= step, path
        assert all(torch.isfinite(t).all() for t in state["state_dict"].values()), path
    assert not list((run / "checkpoints").glob("*.tmp"))


class _Trainer:
    """What StopOnDivergence reads of a trainer."""

    global_step, current_epoch, optimizers, sanity_checking = 0, 0, (), False


def test_divergence_guard_refuses_to_save_non_finite_weights() -> None:
    guard = StopOnDivergence(check_every_n_steps=100)
    trainer, model = _Trainer(), torch.nn.Linear(2, 2)
    for step, loss in enumerate([2.0, 1.5, math.inf, 1.0]):
        trainer.global_step = step
        guard.on_train_batch_start(trainer, model, None, step)
        guard.on_train_batch_end(trainer, model, {"loss": torch.tensor(loss)}, None, step)
    with pytest.raises(DivergenceError, match=r"became inf at step 2 .* was 1.5 at step 1"):
        guard.on_save_checkpoint(trainer, model, {})
    fresh = StopOnDivergence()
    with torch.no_grad():
        model.weight[0, 0] = math.nan
    with pytest.raises(DivergenceError, match=r"non-finite values at step 0 \(first: weight"):
        fresh.on_save_checkpoint(trainer, model, {})
    with pytest.raises(ValueError, match="check_every_n_steps=0"):
        StopOnDivergence(check_every_n_steps=0)


def test_json_is_strict_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_json(tmp_path / "m.json", {"a": math.nan, "b": [1.0, -math.inf], "c": 2})

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "a": None, "b": [1.0, None], "c": 2
    }  # fmt: skip

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("captioning.files.os.fsync", full)
    with pytest.raises(DiskFullError, match=rf"no space left on device writing {path}"):
        write_json(path, {"new": 1})
    assert json.loads(path.read_text())["c"] == 2  # the previous file is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]  # no temporary left


def test_a_full_disk_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def full(obj: object, handle: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("captioning.resume.torch.save", full)
    with pytest.raises(DiskFullError, match=rf"no space left on device writing {path}"):
        io.save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


# ---------------------------------------------------------------------- checks up front


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.batch_size=0", "data.batch_size=0"),
        ("data.eval_batch_size=-1", "data.eval_batch_size=-1"),
        ("data.max_caption_len=0", "data.max_caption_len=0"),
        ("decoder.hidden_dim=0", "decoder.hidden_dim=0"),
        ("attention.attention_dim=0", "attention.attention_dim=0"),
        ("encoder.grid_size=0", "encoder.grid_size=0"),
        ("encoder.channels=[32,0]", "encoder.channels[1]=0"),
        ("decoder=transformer", None),
    ],
)
def test_bad_sizes_fail_before_any_work(tmp_path: Path, override: str, key: str | None) -> None:
    overrides = [*TINY, override, "trainer.fast_dev_run=true"]
    if key is None:  # a valid config passes the check and trains
        overrides.append("decoder.layers=1")
        assert "test/CIDEr-D" in train(compose_train(tmp_path, overrides))
        return
    with pytest.raises(ConfigError, match="^" + re.escape(key) + ": expected an integer"):
        train(compose_train(tmp_path, overrides))
    assert not (tmp_path / "data").exists()  # nothing generated, nothing written


def test_an_image_size_the_encoder_cannot_take_names_the_key(tmp_path: Path) -> None:
    encoder = SmallCNN(channels=[8, 8, 8, 8], grid_size=4, kernel_size=4)
    with pytest.raises(ConfigError, match=r"data.image_size=4 does not fit encoder SmallCNN"):
        check_encoder_input(encoder, 4)
    check_encoder_input(encoder, 32)
    with pytest.raises(ConfigError, match=r"data.image_size=4 does not fit"):
        train(compose_train(tmp_path, [*TINY, "data.image_size=4", "trainer.fast_dev_run=true"]))


def test_an_encoder_whose_grid_does_not_cover_its_regions_is_refused() -> None:
    class Skewed(torch.nn.Module):  # 6 regions, but a 2x2 grid: maps and grounding would break
        out_dim = 4

        def grid(self, height: int, width: int) -> tuple[int, int]:
            return 2, 2

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(images), 6, 4)

    with pytest.raises(ConfigError, match=r"gives 6 regions for data.image_size=32 but a 2x2 grid"):
        check_encoder_input(Skewed(), 32)


def test_unreadable_checkpoints_fail_before_data_set_up(tiny_run: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((tiny_run / "run" / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    for override in (f"ckpt_path={truncated}", f"init_from={truncated}"):
        cfg = compose_train(tmp_path, [*TINY, override, "trainer.max_epochs=1"])
        with pytest.raises(ValueError, match=r"truncated.ckpt: not a readable checkpoint"):
            train(cfg)
    assert not (tmp_path / "data").exists()


def test_resuming_with_another_model_names_the_difference(tiny_run: Path, tmp_path: Path) -> None:
    last = tiny_run / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_train(tmp_path, [*TINY, f"ckpt_path={last}", "decoder.hidden_dim=64"])
    with pytest.raises(ValueError, match=r"model.decoder.hidden_dim=256 there, 64 here"):
        train(cfg)


def test_a_run_from_before_refiners_resumes(tiny_run: Path, tmp_path: Path) -> None:
    from captioning.train import check_continued_checkpoint

    checkpoint = torch.load(tiny_run / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["hyper_parameters"]["model"]["refiner"]  # as saved before refiners existed
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    check_continued_checkpoint(str(old), compose_train(tmp_path, [*TINY]))  # refiner=none: same
    with pytest.raises(ValueError, match=r"model.refiner=None there"):
        check_continued_checkpoint(str(old), compose_train(tmp_path, [*TINY, "refiner=aoa"]))


def test_a_checkpoint_without_a_config_key_names_it(tiny_run: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(tiny_run / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["hyper_parameters"]["config"]["data"]
    path = tmp_path / "nodata.ckpt"
    torch.save(checkpoint, path)
    cfg = compose_config("eval", tmp_path, [f"ckpt={path}"])
    with pytest.raises(ValueError, match=rf"checkpoint {path} has no config.data"):
        evaluate(cfg)
