"""Reading a captioning checkpoint (``weights_only``: nothing is unpickled) and its config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A captioning checkpoint's contents (``weights_only``: nothing is unpickled), checked."""
    try:
        checkpoint = torch.load(
            Path(path).expanduser(), map_location=map_location, weights_only=True
        )
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except Exception as error:
        raise ValueError(f"{path}: not a readable checkpoint ({error})") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a readable checkpoint (it holds a {type(checkpoint)})")
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or "vocab" not in hparams:
        raise ValueError(f"{path}: not a captioning checkpoint (no vocabulary or config)")
    if "state_dict" not in checkpoint:
        raise ValueError(f"{path}: not a captioning checkpoint (no state_dict)")
    for key in ("model", "optimizer", "loss", "decoding"):
        if key not in hparams:
            raise ValueError(f"checkpoint {path} has no hyper_parameters.{key}")
    return checkpoint


def config_value(config: Mapping[str, Any] | None, dotted: str, source: str = "") -> Any:
    """``config[a][b]`` for ``dotted='a.b'``, or ``checkpoint X has no config.a.b``."""
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            raise ValueError(f"checkpoint {source or '(unnamed)'} has no config.{dotted}")
        node = node[key]
    return node
