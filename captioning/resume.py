"""Runs that survive being killed: atomic checkpoints, RNG state, and where to resume from."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from lightning.fabric.plugins import TorchCheckpointIO
from omegaconf import DictConfig

from captioning.files import write_atomic

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_run_id"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file in the same folder, fsync, then rename.

    A kill during a save leaves the previous ``last.ckpt`` whole (``os.replace`` is atomic);
    a failed write (a full disk: ``no space left on device writing <path>``) removes its
    temporary file; only a SIGKILL can leave one, and the next run removes it.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        write_atomic(path, lambda handle: torch.save(checkpoint, handle))


def remove_stale_temporaries(output_dir: Path) -> list[Path]:
    """Delete the checkpoint temporaries a killed run left (only names our writer makes)."""
    stale = sorted((output_dir / "checkpoints").glob(".*.ckpt.*.tmp"))
    stale += sorted((output_dir / "checkpoints").glob("*.ckpt.tmp"))  # the earlier naming
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("Removed %s, left by an interrupted save", path)
    return stale


class RNGState(L.Callback):
    """Checkpoint the Python, NumPy and torch RNG states, so a resumed run draws the same
    dropout masks as an uninterrupted one (stored as tensors and ints: ``weights_only`` safe)."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, cached = np.random.get_state()
        state = {
            "python": random.getstate(),
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "position": int(position),
                "has_gauss": int(has_gauss),
                "cached": float(cached),
            },
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        numpy = state_dict["numpy"]
        np.random.set_state(
            (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
             numpy["has_gauss"], numpy["cached"])
        )  # fmt: skip
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def resume_checkpoint(resume: Any, ckpt_path: str | None, output_dir: Path) -> str | None:
    """The checkpoint to continue from: ``resume=true|auto|false`` or ``ckpt_path=last|PATH``."""
    last = output_dir / "checkpoints" / "last.ckpt"
    if resume not in (True, False, "auto", None):
        raise ValueError(f"resume={resume!r}: expected true, false or auto")
    if resume is True or ckpt_path == "last":
        if not last.is_file():
            raise FileNotFoundError(
                f"resume=true: no checkpoint at {last}. Resuming needs the same run_name as the "
                "first run (outputs/<run_name>/); resume=auto starts fresh when there is none"
            )
        return str(last)
    if resume == "auto":
        if last.is_file():
            return str(last)
        log.info("resume=auto: no checkpoint at %s, starting fresh", last)
        return None
    if ckpt_path and not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint")
    return ckpt_path


def wandb_run_id(output_dir: Path, resuming: bool) -> str | None:
    """The W&B run id to continue (written by the first run), or None for a new run."""
    path = output_dir / WANDB_ID_FILE
    return path.read_text().strip() if resuming and path.is_file() else None


def remember_wandb_run(logger: Any, output_dir: Path) -> None:
    """Keep a W&B logger's run id in the run folder, for the next ``resume=true``."""
    if type(logger).__name__ != "WandbLogger":
        return
    (output_dir / WANDB_ID_FILE).write_text(logger.experiment.id + "\n")


# ---------------------------------------------------------------------- one run per folder

# What a training run leaves in its folder (Hydra's .hydra/ and the job log are written
# before the run starts, so they do not count).
RUN_FILES = ("final_metrics.json", "test_metrics.json", WANDB_ID_FILE, "csv/metrics.csv")
RUN_FOLDERS = ("checkpoints", "tensorboard", "wandb")
RECORDED_CONFIG = ".hydra"


class RunFolderExists(FileExistsError):
    """The run folder already holds a run that this one would overwrite."""


def previous_run(output_dir: Path) -> Path | None:
    """The first file of an earlier run found in ``output_dir``, or None."""
    for name in RUN_FILES:
        if (output_dir / name).is_file():
            return output_dir / name
    for name in RUN_FOLDERS:
        folder = output_dir / name
        if folder.is_dir():
            found = next((p for p in sorted(folder.rglob("*")) if p.is_file()), None)
            if found is not None:
                return found
    return None


def check_run_folder(
    output_dir: Path, resume: Any, ckpt_path: str | None, overwrite: bool = False
) -> None:
    """Refuse to start a fresh run in a folder that holds one, unless told to continue or
    overwrite it."""
    found = previous_run(output_dir)
    if found is None or overwrite or resume in (True, "auto") or ckpt_path == "last":
        return
    own = (output_dir / "checkpoints").resolve()
    if ckpt_path and Path(ckpt_path).expanduser().resolve().parent == own:
        return  # continuing from one of this run's own checkpoints
    raise RunFolderExists(
        f"{output_dir} already holds a run ({found.relative_to(output_dir)}); a fresh start "
        "would overwrite its checkpoints and logs. Continue it with resume=true (or "
        "resume=auto), start another with a new run_name=NAME (or hydra.run.dir=DIR), or "
        "replace it with overwrite=true"
    )


class KeepRecordedConfig(Callback):
    """Hydra callback: a job refused because its folder holds a run leaves that run's recorded
    config (``.hydra/``, which Hydra rewrites before the job starts) as it was, so reports keep
    labelling the run by its own overrides."""

    def __init__(self) -> None:
        self.saved: dict[Path, dict[str, bytes]] = {}

    def _remember(self, run_dirs: Any) -> None:
        for run_dir in run_dirs:
            recorded = Path(run_dir) / RECORDED_CONFIG
            if recorded.is_dir():
                files = {p.name: p.read_bytes() for p in recorded.iterdir() if p.is_file()}
                self.saved[recorded.resolve()] = files

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._remember([config.hydra.run.dir])

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            self._remember(p for p in sweep_dir.iterdir() if p.is_dir())

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED:
            return
        if not isinstance(job_return._return_value, RunFolderExists):
            return
        recorded = (Path(config.hydra.runtime.output_dir) / RECORDED_CONFIG).resolve()
        files = self.saved.get(recorded)
        if files is None:
            return
        for path in recorded.iterdir():
            if path.is_file() and path.name not in files:
                path.unlink()  # written by Hydra for the refused job a moment ago
        for name, content in files.items():
            write_atomic(recorded / name, lambda out, content=content: out.write(content))
