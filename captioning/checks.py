"""Start-up checks of a run config: a bad value fails before any work, naming its key."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

# Model widths, depths and head counts: each must be an integer >= 1 wherever it appears.
SIZE_KEYS = frozenset(
    {"attention_dim", "d_model", "depth", "embed_dim", "ffn_dim", "heads", "hidden_dim",
     "layers", "mlp_dim", "patch_size", "width"}
)  # fmt: skip
DATA_SIZES = ("batch_size", "eval_batch_size", "max_caption_len", "image_size")


class ConfigError(ValueError):
    """A config value that cannot work; the message names its key."""


def _positive_int(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r}: expected an integer >= 1")


def _walk(node: Any, prefix: str) -> Iterator[tuple[str, str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}.{key}" if prefix else str(key))
            if not isinstance(value, Mapping | list):
                yield str(key), f"{prefix}.{key}" if prefix else str(key), value
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{prefix}[{index}]")


def check_run_config(config: Mapping[str, Any]) -> None:
    """Sizes of the data and the model (a resolved run config): integers >= 1, by key."""
    data = config.get("data") or {}
    for key in DATA_SIZES:
        if data.get(key) is not None:
            _positive_int(data[key], f"data.{key}")
    for group in ("encoder", "attention", "decoder"):  # attention before the decoder holding it
        node = config.get(group) or {}
        if node.get("grid_size") is not None:
            _positive_int(node["grid_size"], f"{group}.grid_size")
        for key, dotted, value in _walk(node, group):
            if key in SIZE_KEYS and value is not None:
                _positive_int(value, dotted)
        channels = node.get("channels")
        if isinstance(channels, list):
            for index, value in enumerate(channels):
                _positive_int(value, f"{group}.channels[{index}]")


@torch.no_grad()
def check_encoder_input(encoder: nn.Module, image_size: int) -> None:
    """One forward pass of a blank image: a size the encoder cannot take fails here, by key."""
    was_training = encoder.training
    encoder.eval()
    try:
        device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
        regions = encoder(torch.zeros(1, 3, image_size, image_size, device=device))
        height, width = encoder.grid(image_size, image_size)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(
            f"data.image_size={image_size} does not fit encoder {type(encoder).__name__} "
            f"({str(error).splitlines()[0]}); raise data.image_size or choose another encoder"
        ) from None
    finally:
        encoder.train(was_training)
    if height < 1 or width < 1 or regions.shape[1] < 1:
        raise ConfigError(
            f"data.image_size={image_size} is too small for encoder {type(encoder).__name__}: "
            f"it gives a {height}x{width} grid; raise data.image_size"
        )
