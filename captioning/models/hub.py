"""Pretrained weights from the Hugging Face cache (timm and open_clip), and the messages for
when they cannot be had; how pretrained backbones are partly frozen."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any
from urllib.parse import urlparse

from torch import nn

from captioning.models.encoders import apply_finetune

log = logging.getLogger(__name__)

# the files timm and open_clip load from a Hugging Face repository
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)
PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connection (False when HF is offline).

    Behind a proxy only the hub client knows the way: then the answer is yes, and the client
    reports what fails.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in PROXIES):
        return True
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout).close()
    except OSError:
        return False
    return True


def weights_error(what: str, repo: str | None, reason: str) -> RuntimeError:
    """The message for pretrained weights that cannot be had: what, where to put them, or how
    to do without."""
    where = f"the Hugging Face cache {hub_cache()}"
    if repo:
        where += (
            f" (on a machine with network, `huggingface-cli download {repo}`, then copy that "
            "folder here or point HF_HOME at it)"
        )
    return RuntimeError(
        f"could not load the pretrained weights of {what} ({reason}). They are read from "
        f"{where}; or set encoder.pretrained=false"
    )


def check_weights_reachable(what: str, repo: str | None) -> None:
    """Fail at once, instead of after the hub client's retries, when the weights are neither
    cached nor downloadable."""
    if not repo:
        return  # weights behind a plain URL: the loader's own error names it
    from huggingface_hub import try_to_load_from_cache

    cached = any(isinstance(try_to_load_from_cache(repo, f), str) for f in WEIGHT_FILES)
    if not cached and not hub_reachable():
        raise weights_error(what, repo, "not in the cache, and the hub is not reachable")


def note_preprocessing(
    what: str, config: dict[str, Any], image_size: int, pretrained: bool
) -> None:
    """Say where the data's images differ from those the pretrained weights were trained on.

    The normalisation is applied by the encoder; the side and the resampling filter are the
    data's (``data.image_size``; the loader resizes bilinearly with antialiasing).
    """
    if not pretrained:
        return
    side = config.get("input_size", (3, image_size, image_size))[-1]
    if side != image_size:
        log.warning(
            "%s was trained on %d px images; data.image_size=%d (set data.image_size=%d to match)",
            what, side, image_size, side,
        )  # fmt: skip
    interpolation = config.get("interpolation", "bilinear")
    if interpolation != "bilinear":
        log.info(
            "%s was trained on %s-resized images; the loader resizes bilinearly (antialiased)",
            what, interpolation,
        )  # fmt: skip


def finetune_blocks(model: nn.Module, blocks: list[nn.Module], finetune: str) -> list[nn.Module]:
    """:func:`apply_finetune` over ``blocks``, and every parameter of ``model`` outside the
    trained blocks frozen too (position embeddings, class and register tokens, a pre-norm):
    ``none`` leaves nothing trainable. Returns the frozen blocks."""
    frozen = apply_finetune(blocks, finetune)
    if finetune != "all":
        trained = {id(p) for block in blocks[len(frozen) :] for p in block.parameters()}
        for param in model.parameters():
            if id(param) not in trained:
                param.requires_grad_(False)
    return frozen
