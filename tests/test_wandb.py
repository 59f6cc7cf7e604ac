"""W&B logging, offline: the run is written under the run folder and read back from its file."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from captioning.train import train
from tests.helpers import compose_train, tiny_shapes_overrides
from tests.wandb_history import config, history


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default
    monkeypatch.setenv("WANDB_SILENT", "true")


def _run(tmp_path: Path, *overrides: str) -> dict[str, float]:
    cfg = compose_train(
        tmp_path,
        [*tiny_shapes_overrides(), "logger=wandb", "trainer.max_epochs=1",
         "trainer.check_val_every_n_epoch=1", "samples=0", "callbacks.samples.samples=3",
         *overrides],
    )  # fmt: skip
    return train(cfg)


class MissingRow(AssertionError):
    """A history row the run logged is not in its W&B run file."""


def _rows_with(path: Path, key: str) -> list[dict]:
    rows = history(path)
    found = [r for r in rows if key in r]
    if not found:
        keys = [sorted(k for k in r if not k.startswith("_")) for r in rows]
        raise MissingRow(f"no history row of {path} holds {key!r}; its rows hold {keys}")
    return found


def _once_more_if_a_row_is_missing(test: Callable[[Path], None]) -> Callable[..., None]:
    """Run ``test`` again, in a fresh folder, when W&B's file lacks a row the run logged.

    In about one full suite of twenty on a loaded 2-core machine, W&B (0.31, offline) wrote
    a run file without the validation row that Lightning had logged (the progress bar showed
    it); it never happened when this file ran alone. A second miss fails the test.
    """

    @functools.wraps(test)
    def run(tmp_path: Path) -> None:
        try:
            test(tmp_path / "first")
        except MissingRow as missing:
            warnings.warn(f"retrying once: {missing}", stacklevel=1)
            test(tmp_path / "second")

    return run


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
@pytest.mark.usefixtures("offline")
@_once_more_if_a_row_is_missing
def test_offline_run_logs_metrics_config_samples_and_attention(tmp_path: Path) -> None:
    metrics = _run(tmp_path, "logger.wandb.tags=[smoke]")
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    rows = history(runs[0])
    val = _rows_with(runs[0], "val/CIDEr-D")
    assert len(val) == 1 and val[0]["val/CIDEr-D"] == pytest.approx(metrics["val/CIDEr-D"])
    assert any("train/images_per_s" in r and r["train/images_per_s"] > 0 for r in rows)
    table = next(r for r in rows if "val/samples/_type" in r)
    assert table["val/samples/_type"] == "table-file"
    assert (table["val/samples/nrows"], table["val/samples/ncols"]) == (3, 5)
    figures = next(r for r in rows if "val/attention/count" in r)
    assert figures["val/attention/count"] == 3
    logged = config(runs[0])
    assert logged["config"]["data"]["generator"]["num_train"] == 96  # the resolved config
    run_id = runs[0].stem.removeprefix("run-")
    assert (tmp_path / "run" / "wandb_run_id").read_text().strip() == run_id


def test_wandb_mode_online_in_the_environment_wins(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    cfg = compose_train(tmp_path, ["logger=wandb"])
    assert cfg.logger.wandb.offline is False
    monkeypatch.delenv("WANDB_MODE")
    assert compose_train(tmp_path, ["logger=wandb"]).logger.wandb.offline is True


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
@pytest.mark.usefixtures("offline")
@_once_more_if_a_row_is_missing
def test_resume_continues_the_same_wandb_run(tmp_path: Path) -> None:
    stop = "+callbacks.stop._target_=tests.test_resume.StopAfterFirstEpoch"
    _run(tmp_path, "run_name=w", "trainer.max_epochs=2", "test=false", stop)
    first_id = (tmp_path / "run" / "wandb_run_id").read_text().strip()
    _run(tmp_path, "run_name=w", "trainer.max_epochs=2", "test=false", "resume=true")
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [r.stem for r in runs] == [f"run-{first_id}"] * 2  # one W&B run, synced as one
    epochs = [r.get("epoch") for r in _rows_with(runs[1], "val/CIDEr-D")]
    assert epochs == [1]  # the resumed part logs the second epoch only


def test_sweep_jobs_are_grouped_by_their_multirun() -> None:
    from omegaconf import OmegaConf

    import captioning  # noqa: F401  (registers the resolvers)

    node = OmegaConf.create(
        {"multi": "${captioning.sweep_group:MULTIRUN,/o/train/multirun/2026-11-24_01-00-00}",
         "single": "${captioning.sweep_group:RUN,/o/train/multirun/2026-11-24_01-00-00}"}
    )  # fmt: skip
    assert node.multi == "2026-11-24_01-00-00" and node.single is None
