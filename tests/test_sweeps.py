"""Sweeps through the real command line: a grid multirun, Optuna, submitit; the report."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from captioning.module import CaptioningModule
from captioning.report import write_report
from tests.helpers import tiny_shapes_overrides

ROOT = Path(__file__).resolve().parents[1]


def _multirun(tmp_path: Path, *overrides: str) -> Path:
    args = [
        sys.executable, "-m", "captioning.train", "-m", *tiny_shapes_overrides(),
        "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "samples=0", "logger=csv",
        f"paths.root_dir={tmp_path}", f"hydra.sweep.dir={tmp_path}/sweep", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "sweep"


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_grid_multirun_and_report(tmp_path: Path) -> None:
    sweep = _multirun(tmp_path, "attention=additive,dot")
    paths = write_report(sweep)
    with paths["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["job"], r["overrides"]) for r in rows] == [
        ("0", "attention=additive"),
        ("1", "attention=dot"),
    ]
    for row, job in zip(rows, ("0", "1"), strict=True):
        test_metrics = yaml.safe_load((sweep / job / "test_metrics.json").read_text())
        assert float(row["test/CIDEr-D"]) == pytest.approx(test_metrics["CIDEr-D"])
        model = CaptioningModule.from_checkpoint(sweep / job / "checkpoints" / "last.ckpt")
        assert float(row["params"]) == sum(p.numel() for p in model.captioner.parameters())
        assert float(row["fit_time_s"]) > 0
    assert float(rows[0]["params"]) != float(rows[1]["params"])  # additive has its own layers
    markdown = paths["md"].read_text()
    assert "| 1 | attention=dot |" in markdown
    header = markdown.splitlines()[2]
    assert "test/grounding_noun" in header and "val/CIDEr-D" not in header  # test scores only
    assert header.endswith("| params | fit_time_s | train/images_per_s |")
    assert Image.open(paths["png"]).size[1] > 40


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_optuna_sweep_maximises_val_cider(tmp_path: Path) -> None:
    sweep = _multirun(
        tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
    )  # fmt: skip
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [yaml.safe_load((sweep / j / "final_metrics.json").read_text()) for j in ("0", "1")]
    assert results["best_value"] == pytest.approx(max(t["val/CIDEr-D"] for t in trials))
    assert set(results["best_params"]) == {
        "optimizer.lr",
        "decoder.dropout",
        "loss.label_smoothing",
    }
    assert len(write_report(sweep)["csv"].read_text().splitlines()) == 3


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_submitit_local_launcher_runs_a_job(tmp_path: Path) -> None:
    sweep = _multirun(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    assert (sweep / "0" / "final_metrics.json").is_file()
    assert list((sweep / ".submitit").iterdir())


def test_slurm_launcher_config_composes() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 1)


def test_report_of_a_folder_without_jobs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no job folders"):
        write_report(tmp_path)
