"""Where a result came from: the command, the machine and the code, written beside it."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

RUN_FILE = "run.json"  # beside final_metrics.json; captioning.report reads both


def cpu_name() -> str:
    """The CPU model as the kernel names it (``AMD EPYC 7B13``), else the platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """``<cores>-core <CPU>`` plus the GPU model when one is used (``1x NVIDIA H200``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    name = f"{cores}-core {cpu_name()}"
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        name += f", {gpus}x {torch.cuda.get_device_name(0)}"
    return name


def code_version() -> str:
    """The git commit of the source tree this package runs from (``+dirty`` with local
    changes), or the installed package version."""
    source = Path(__file__).resolve().parents[1]
    if (source / ".git").exists():
        try:
            commit = subprocess.run(
                ["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()  # fmt: skip
            status = subprocess.run(
                ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()  # fmt: skip
            return commit + ("+dirty" if status else "")
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return f"captioning {metadata.version('captioning')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def command(entry: str, overrides: list[str] | None = None) -> str:
    """The command line that reproduces this run (its Hydra overrides when known)."""
    arguments = overrides if overrides is not None else sys.argv[1:]
    return " ".join([f"python -m captioning.{entry}", *(shlex.quote(a) for a in arguments)])


def run_info(entry: str, overrides: list[str] | None = None) -> dict[str, Any]:
    return {
        "command": command(entry, overrides),
        "machine": machine(),
        "commit": code_version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
