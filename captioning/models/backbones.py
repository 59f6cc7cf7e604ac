"""Encoders from the vision ecosystem: any timm model, and CLIP image towers from open_clip.

Both follow the encoder contract of :mod:`captioning.models.encoders`: images (B, 3, H, W) in
[0, 1] in, regions (B, N, out_dim) out, ``grid(H, W)`` mapping N back onto the image. A
CNN-like model gives its last feature map as a grid; a ViT-like model gives its patch tokens
(class and other prefix tokens dropped). The normalisation comes from the model's own
pretrained configuration, never from a table of ours.
"""

from __future__ import annotations

import logging
import socket
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from captioning.models.encoders import Encoder, FrozenBatchNormMixin, apply_finetune

log = logging.getLogger(__name__)


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


# the files timm and open_clip load from a Hugging Face repository
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connection (False when HF is offline)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _check_weights_reachable(what: str, repo: str | None) -> None:
    """Fail at once, instead of after the hub client's retries, when the weights are neither
    cached nor downloadable."""
    if not repo:
        return  # weights behind a plain URL: the loader's own error names it
    from huggingface_hub import try_to_load_from_cache

    cached = any(isinstance(try_to_load_from_cache(repo, f), str) for f in WEIGHT_FILES)
    if not cached and not _hub_reachable():
        raise _weights_error(
            what, repo, OSError("not in the cache, and the hub is not reachable"),
            "encoder.pretrained=false",
        )  # fmt: skip


def _weights_error(what: str, repo: str | None, error: Exception, fix: str) -> RuntimeError:
    """The message for pretrained weights that cannot be had: what, where to put them, or how
    to do without."""
    where = (
        f"the Hugging Face cache {_hub_cache()} (on a machine with network, "
        f"`huggingface-cli download {repo}`, then copy that folder here or point HF_HOME at it)"
        if repo
        else f"the Hugging Face cache {_hub_cache()}"
    )
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return RuntimeError(
        f"could not load the pretrained weights of {what} ({first}). They are read from {where}; "
        f"or set {fix}"
    )


def _note_preprocessing(
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


def _freeze_params(*params: nn.Parameter | None) -> None:
    for param in params:
        if isinstance(param, nn.Parameter):
            param.requires_grad_(False)


class TimmEncoder(FrozenBatchNormMixin, Encoder):
    """Any timm model as an encoder (``encoder=timm encoder.name=NAME``).

    A model with patch tokens (ViT, DeiT, EVA, DINOv2, ...) gives them as regions, its prefix
    tokens (class, distillation, registers) dropped; it is built for ``image_size`` (its
    position embeddings resampled when the weights are loaded). Any other model gives the last
    map of ``features_only`` (widths from ``feature_info``), pooled to ``grid_size`` when set.

    Args:
        name: a timm model name (``timm.list_models()``), e.g. ``resnet50``,
            ``convnext_tiny``, ``efficientnet_b0``, ``vit_small_patch16_224``.
        pretrained: load the weights of the name's default tag from the local timm / Hugging
            Face cache (fails at once, naming the weights and where to put them).
        finetune: ``all`` | ``none`` | ``last_N`` over the model's stages (a CNN) or
            transformer blocks (a ViT).
        grid_size: adaptive-pool a CNN's map to ``grid_size`` x ``grid_size``; None keeps it.
        image_size: the side a ViT-like model is built for (``data.image_size``).
    """

    def __init__(
        self,
        name: str = "resnet50",
        pretrained: bool = False,
        finetune: str = "all",
        grid_size: int | None = None,
        image_size: int = 224,
    ) -> None:
        import timm
        import timm.data

        if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
            close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
            raise ValueError(f"encoder.name={name!r} is not a timm model; e.g. {close}")
        probe = timm.create_model(name, pretrained=False, num_classes=0)
        self.data_config = timm.data.resolve_data_config({}, model=probe)
        super().__init__(mean=self.data_config["mean"], std=self.data_config["std"])
        self.name = name
        self.tokens = hasattr(probe, "patch_embed") and hasattr(probe, "num_prefix_tokens")
        kwargs: dict[str, Any] = {"num_classes": 0}
        if self.tokens:
            kwargs["img_size"] = image_size
        else:
            kwargs = {"features_only": True, "out_indices": (-1,)}
        repo = (probe.pretrained_cfg or {}).get("hf_hub_id")
        if pretrained:
            _check_weights_reachable(f"timm model {name}", repo)
        try:
            self.model = timm.create_model(name, pretrained=pretrained, **kwargs)
        except (OSError, RuntimeError, ValueError) as error:
            if not pretrained:
                raise
            raise _weights_error(
                f"timm model {name}", repo, error, "encoder.pretrained=false"
            ) from None
        del probe
        _note_preprocessing(f"timm {name}", self.data_config, image_size, pretrained)
        self.image_size = image_size
        self.pool = nn.AdaptiveAvgPool2d(grid_size) if grid_size and not self.tokens else None
        self.grid_size = grid_size if not self.tokens else None
        if self.tokens:
            self.patch = tuple(self.model.patch_embed.patch_size)
            self.prefix = int(self.model.num_prefix_tokens)
            self.out_dim = int(self.model.num_features)
            blocks = [self.model.patch_embed, *self.model.blocks, self.model.norm]
            self.frozen = apply_finetune(blocks, finetune)
            if finetune != "all":
                _freeze_params(
                    getattr(self.model, "pos_embed", None),
                    getattr(self.model, "cls_token", None),
                    getattr(self.model, "reg_token", None),
                    getattr(self.model, "dist_token", None),
                )
        else:
            self.out_dim = int(self.model.feature_info.channels()[-1])
            fmt = getattr(self.model, "output_fmt", "NCHW")  # Swin and friends give NHWC maps
            self.channels_last_map = getattr(fmt, "value", fmt) == "NHWC"
            self.frozen = apply_finetune(list(self.model.children()), finetune)

    @torch.no_grad()
    def grid(self, height: int, width: int) -> tuple[int, int]:
        if self.tokens:
            return height // self.patch[0], width // self.patch[1]
        if self.grid_size:
            return self.grid_size, self.grid_size
        probe = torch.zeros(1, 3, height, width, device=self.mean.device)
        was_training = self.training
        self.eval()  # a probe must not move BatchNorm statistics
        features = self.model(probe)[-1]
        self.train(was_training)
        shape = features.shape[1:3] if self.channels_last_map else features.shape[-2:]
        return int(shape[0]), int(shape[1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalise(images)
        if self.tokens:
            if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
                raise ValueError(
                    f"timm {self.name} built for {self.image_size} px images got "
                    f"{tuple(images.shape[-2:])}: set encoder.image_size to data.image_size"
                )
            return self.model.forward_features(x)[:, self.prefix :]  # (B, N, D), row-major
        features = self.model(x)[-1]  # (B, D, h, w)
        if self.channels_last_map:
            features = features.permute(0, 3, 1, 2)
        if self.pool is not None:
            features = self.pool(features)
        return features.flatten(2).transpose(1, 2)


class OpenCLIPEncoder(FrozenBatchNormMixin, Encoder):
    """A CLIP image tower from open_clip (``encoder=open_clip encoder.name=ViT-B-32``).

    A ViT tower gives its patch tokens after the final LayerNorm (the class token dropped); a
    ResNet tower (``RN50``, ``RN101``, ...) gives its last stage's map, before CLIP's attention
    pooling. The text tower and the projection heads are not kept. Images are normalised with
    the tower's own mean and std (OpenAI's CLIP statistics for the OpenAI and LAION weights).

    Args:
        name: an open_clip model name (``open_clip.list_models()``): ``RN50``, ``RN101``,
            ``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14``, ...
        pretrained: false, or a weights tag (``open_clip.list_pretrained_tags_by_model(name)``:
            ``openai``, ``laion2b_s34b_b79k``, ...) read from the local cache.
        finetune: ``all`` | ``none`` | ``last_N`` over the stages (ResNet) or blocks (ViT).
        grid_size: adaptive-pool a ResNet tower's map to a fixed grid; None keeps it.
        image_size: the side a ViT tower is built for (its position embeddings resampled).
    """

    def __init__(
        self,
        name: str = "ViT-B-32",
        pretrained: bool | str = False,
        finetune: str = "all",
        grid_size: int | None = None,
        image_size: int = 224,
    ) -> None:
        import open_clip

        if name not in open_clip.list_models():
            raise ValueError(
                f"encoder.name={name!r} is not an open_clip model; choose from "
                f"{[m for m in open_clip.list_models() if m.startswith(('RN', 'ViT-B', 'ViT-L'))]}"
            )
        if pretrained is True:
            raise ValueError(
                f"encoder.pretrained for open_clip is a weights tag, e.g. "
                f"{open_clip.list_pretrained_tags_by_model(name)[:3]}"
            )
        tag = None if pretrained in (False, None, "", "false", "none") else str(pretrained)
        hub = str((open_clip.get_pretrained_cfg(name, tag) or {}).get("hf_hub", "")) if tag else ""
        if tag:
            _check_weights_reachable(f"open_clip {name} ({tag})", hub.rstrip("/") or None)
        try:
            clip = open_clip.create_model(name, pretrained=tag, force_image_size=image_size)
        except (OSError, RuntimeError, ValueError) as error:
            if tag is None:
                raise
            raise _weights_error(
                f"open_clip {name} ({tag})", hub.rstrip("/") or None, error,
                "encoder.pretrained=false",
            ) from None  # fmt: skip
        visual = clip.visual
        del clip  # the text tower is not needed
        preprocess = open_clip.get_model_preprocess_cfg(visual) or {}
        mean = (
            preprocess.get("mean", getattr(visual, "image_mean", None))
            or open_clip.OPENAI_DATASET_MEAN
        )
        std = (
            preprocess.get("std", getattr(visual, "image_std", None))
            or open_clip.OPENAI_DATASET_STD
        )
        super().__init__(mean=tuple(mean), std=tuple(std))
        # the side it was trained at (the preprocessing config holds the forced one)
        size = ((open_clip.get_model_config(name) or {}).get("vision_cfg") or {}).get(
            "image_size", image_size
        )
        self.data_config = {
            "mean": tuple(mean), "std": tuple(std),
            "input_size": (3, *(size if isinstance(size, (tuple, list)) else (size, size))),
            "interpolation": preprocess.get("interpolation", "bicubic"),
        }  # fmt: skip
        _note_preprocessing(f"CLIP {name} ({tag})", self.data_config, image_size, tag is not None)
        self.name = name
        self.image_size = image_size
        self.tokens = hasattr(visual, "transformer")
        if self.tokens:
            visual.proj = None  # the contrastive projection: not used for regions
            visual.attn_pool = None
            self.patch = tuple(visual.patch_size)
            self.out_dim = int(visual.transformer.width)
            blocks = [
                nn.ModuleList([visual.conv1, visual.ln_pre]),
                *visual.transformer.resblocks,
                visual.ln_post,
            ]
            self.frozen = apply_finetune(blocks, finetune)
            if finetune != "all":
                _freeze_params(visual.class_embedding, visual.positional_embedding)
            self.pool = None
            self.grid_size = None
        else:
            self.out_dim = int(visual.attnpool.k_proj.in_features)
            visual.attnpool = nn.Identity()  # CLIP's attention pooling: not used for regions
            stem = nn.ModuleList(
                [getattr(visual, f"{part}{i}") for i in (1, 2, 3) for part in ("conv", "bn")]
            )  # the three-convolution stem (``visual.stem`` is a method)
            blocks = [stem, visual.layer1, visual.layer2, visual.layer3, visual.layer4]
            self.frozen = apply_finetune(blocks, finetune)
            self.pool = nn.AdaptiveAvgPool2d(grid_size) if grid_size else None
            self.grid_size = grid_size
        self.visual = visual

    def grid(self, height: int, width: int) -> tuple[int, int]:
        if self.tokens:
            return height // self.patch[0], width // self.patch[1]
        if self.grid_size:
            return self.grid_size, self.grid_size
        return -(-height // 32), -(-width // 32)  # stem /4, then three stride-2 stages

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalise(images)
        if self.tokens:
            if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
                raise ValueError(
                    f"CLIP {self.name} built for {self.image_size} px images got "
                    f"{tuple(images.shape[-2:])}: set encoder.image_size to data.image_size"
                )
            out = self.visual.forward_intermediates(
                x, indices=1, intermediates_only=True, normalize_intermediates=True,
                output_fmt="NLC",
            )  # fmt: skip
            return out["image_intermediates"][-1]  # (B, N, D) patch tokens
        out = self.visual.forward_intermediates(x, indices=1, intermediates_only=True)
        features = out["image_intermediates"][-1]  # (B, D, h, w)
        if self.pool is not None:
            features = self.pool(features)
        return features.flatten(2).transpose(1, 2)
