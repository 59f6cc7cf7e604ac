"""Start-up checks of a run config: a bad value fails before any work, naming its key."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from captioning.decoding import DecodingConfig
from captioning.metrics.spice import spice_problem
from captioning.models.regions import RegionEncoder

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
    """A resolved run config, before anything is built: sizes of the data and the model are
    integers >= 1, by key, and the settings that depend on each other agree."""
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
    check_combinations(config)
    check_metric_settings(config.get("metrics"))


METEOR_BACKENDS = ("python", "java", "none")


def check_metric_settings(settings: Mapping[str, Any] | None) -> None:
    """The ``metrics`` node: a known METEOR backend, and SPICE only where it can run (the
    message says what to download and where to put it)."""
    settings = settings or {}
    backend = settings.get("meteor_backend", "python")
    if backend not in METEOR_BACKENDS:
        raise ConfigError(
            f"metrics.meteor_backend={backend!r}: expected one of {', '.join(METEOR_BACKENDS)}"
        )
    if backend == "java" and shutil.which("java") is None:
        raise ConfigError(
            "metrics.meteor_backend=java needs Java on PATH; metrics.meteor_backend=python "
            "gives the same scores without it"
        )
    spice = settings.get("spice", False)
    if not isinstance(spice, bool):
        raise ConfigError(f"metrics.spice={spice!r}: expected true or false")
    problem = spice_problem() if spice else None
    if problem is not None:
        raise ConfigError(problem)


def _model_part(config: Mapping[str, Any], part: str) -> Mapping[str, Any]:
    """The encoder or decoder node the model is built from (``model.<part>``, else ``<part>``)."""
    node = (config.get("model") or {}).get(part)
    return node if isinstance(node, Mapping) else (config.get(part) or {})


def decoder_positions(model: Mapping[str, Any]) -> int | None:
    """Steps the decoder's position table holds (``decoder.max_len``: the Transformer's), or
    None for a decoder without one (the recurrent decoders)."""
    value = (model.get("decoder") or {}).get("max_len")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_decoding_length(
    key: str, max_len: Any, model: Mapping[str, Any], source: str = ""
) -> None:
    """``max_len`` decoded words (``key``: ``decoding.max_len`` or ``scst.max_len``) fit the
    decoder's positions: step t reads position t, and past the table it would be clamped."""
    positions = decoder_positions(model)
    if positions is None or not isinstance(max_len, int) or max_len <= positions:
        return
    of = f" of checkpoint {source}" if source else ""
    raise ConfigError(
        f"{key}={max_len} is beyond decoder.max_len={positions}{of} (the decoder's positions): "
        f"lower {key} to at most {positions}"
        + ("" if source else f" or raise decoder.max_len to {max_len}")
    )


def check_image_size(model: Mapping[str, Any], image_size: Any, source: str = "") -> None:
    """An encoder built for one image side (a ViT's ``encoder.image_size``: its position
    embeddings) is given images of that side (``data.image_size``)."""
    built_for = (model.get("encoder") or {}).get("image_size")
    if built_for is None or image_size is None or built_for == image_size:
        return
    of = f" of checkpoint {source}" if source else ""
    raise ConfigError(
        f"encoder.image_size={built_for}{of} differs from data.image_size={image_size}: the "
        "encoder's position embeddings are built for encoder.image_size; set data.image_size="
        f"{built_for}" + ("" if source else " or both to the same value")
    )


def check_combinations(config: Mapping[str, Any]) -> None:
    """The cross-field checks of a resolved run config, each naming both keys."""
    model = {part: _model_part(config, part) for part in ("encoder", "decoder")}
    data = config.get("data") or {}
    check_image_size(model, data.get("image_size"))
    positions = decoder_positions(model)
    caption_len = data.get("max_caption_len")
    if positions is not None and isinstance(caption_len, int) and caption_len + 1 > positions:
        # <bos> and the words are fed to the decoder (<eos> only predicted): max_caption_len + 1
        raise ConfigError(
            f"data.max_caption_len={caption_len} needs {caption_len + 1} decoder positions "
            f"(<bos> and the words), beyond decoder.max_len={positions}: raise decoder.max_len "
            f"to {caption_len + 1} or lower data.max_caption_len to {positions - 1}"
        )
    try:  # the decoding group's own checks, before its length is set against the positions
        decoding = DecodingConfig.of(config.get("decoding") or {})
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_decoding_length("decoding.max_len", decoding.max_len, model)
    scst = config.get("scst") or {}
    objective = (config.get("model") or {}).get("objective", "xe")
    if objective == "scst" and scst.get("after_epoch") is not None:
        raise ConfigError(
            f"scst.after_epoch={scst['after_epoch']} has no effect with model.objective=scst "
            "(SCST from the first step): set scst.after_epoch=null to train with SCST "
            "throughout, or model.objective=xe to switch from cross-entropy at that epoch"
        )
    if objective == "scst" or scst.get("after_epoch") is not None:
        check_decoding_length("scst.max_len", scst.get("max_len"), model)
    check_region_inputs(config)


def is_region_encoder(encoder: Mapping[str, Any]) -> bool:
    """Whether an encoder config reads region features (``encoder=regions``)."""
    return str((encoder or {}).get("_target_", "")).endswith("RegionEncoder")


def check_region_inputs(config: Mapping[str, Any]) -> None:
    """Region features and the region encoder come together, each naming the other."""
    features = (config.get("data") or {}).get("region_features")
    encoder = _model_part(config, "encoder")
    if features and not is_region_encoder(encoder):
        raise ConfigError(
            f"data.region_features={features} serves region features, not images: add "
            "encoder=regions (or leave data.region_features=null to train on the images)"
        )
    if is_region_encoder(encoder) and not features:
        raise ConfigError(
            "encoder=regions reads region features: set data.region_features=PATH (a folder "
            "of <key>.npz/.npy files or one .h5 file; python -m captioning.extract writes one)"
        )


@torch.no_grad()
def check_encoder_input(encoder: nn.Module, image_size: int) -> None:
    """One forward pass of a blank image: a size the encoder cannot take fails here, by key.
    (An encoder of region features reads no images: nothing to check.)"""
    if isinstance(encoder, RegionEncoder):
        return
    was_training = encoder.training
    encoder.eval()
    try:
        device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
        regions = encoder(torch.zeros(1, 3, image_size, image_size, device=device))
        height, width = encoder.grid(image_size, image_size)
    except (AssertionError, RuntimeError, ValueError) as error:
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
    if height * width != regions.shape[1]:  # attention maps, figures and grounding need it
        raise ConfigError(
            f"encoder {type(encoder).__name__} gives {regions.shape[1]} regions for "
            f"data.image_size={image_size} but a {height}x{width} grid: its grid() is wrong"
        )
