"""Runs that survive being killed: atomic checkpoints, RNG state, and where to resume from."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_run_id"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file in the same folder, fsync, then rename.

    A kill during a save leaves the previous ``last.ckpt`` whole (``os.replace`` is atomic);
    only a ``*.ckpt.tmp`` may remain, and the next save overwrites it.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)


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
