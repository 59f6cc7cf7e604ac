"""Writing files safely: strict JSON, atomic replacement, and a clear message on a full disk."""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


class DiskFullError(OSError):
    """``no space left on device writing <path>``: the write was undone, nothing half-written."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(errno.ENOSPC, f"no space left on device writing {path}")


def strict(value: Any) -> Any:
    """``value`` with every NaN / infinity replaced by None, so that it is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    return value


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through a temporary file in its folder, fsync, then rename over it.

    A crash or a full disk leaves the previous file whole and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise DiskFullError(path) from None
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2, **options: Any) -> Path:
    """Write strict JSON (non-finite numbers become null) atomically."""
    text = json.dumps(strict(data), indent=indent, allow_nan=False, **options) + "\n"
    return write_atomic(path, lambda out: out.write(text.encode("utf-8")))
