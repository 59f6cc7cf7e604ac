"""Encoders from the vision ecosystem: any timm model, and CLIP image towers from open_clip.

Both follow the encoder contract of :mod:`captioning.models.encoders`: images (B, 3, H, W) in
[0, 1] in, regions (B, N, out_dim) out, ``grid(H, W)`` mapping N back onto the image. A
CNN-like model gives its last feature map as a grid; a ViT-like model gives its patch tokens
(class and other prefix tokens dropped). The normalisation comes from the model's own
pretrained configuration, never from a table of ours.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch
from torch import nn

from captioning.models.encoders import Encoder, FrozenBatchNormMixin, load_pretrained
from captioning.models.hub import (
    check_weights_reachable,
    finetune_blocks,
    note_preprocessing,
    weights_error,
)

log = logging.getLogger(__name__)

# a features_only model's children that are stages: layer1 (ResNet), stages_0 (ConvNeXt),
# layers_0 (Swin), s1 (RegNet); blocks / stages sequences (EfficientNet) count item by item
STAGE = re.compile(r"(layers?|stages?|blocks?|s)[_.]?\d+")
STAGE_SEQUENCES = {"blocks", "stages", "layers"}
HEAD_ONLY = ("fc_norm", "head_drop", "head", "attn_pool")  # used after forward_features only


def cnn_stages(features: nn.Module) -> list[nn.Module]:
    """A ``features_only`` model as [stem, stage 1, ..., stage n] for ``finetune=last_N``."""
    parts: list[tuple[bool, nn.Module]] = []
    for name, child in features.named_children():
        if name in STAGE_SEQUENCES and isinstance(child, nn.Sequential | nn.ModuleList):
            parts += [(True, stage) for stage in child]
        else:
            parts.append((STAGE.fullmatch(name) is not None, child))
    first = next((i for i, (is_stage, _) in enumerate(parts) if is_stage), len(parts))
    blocks: list[nn.Module] = [nn.ModuleList([m for _, m in parts[:first]])] if first else []
    for is_stage, module in parts[first:]:
        # a module between or after stages (a norm) trains with the stage before it
        blocks.append(module if is_stage else nn.ModuleList([blocks.pop(), module]))
    return blocks


def _unsupported(kind: str, name: str, error: BaseException) -> ValueError:
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ValueError(f"encoder={kind} cannot use encoder.name={name!r} ({first})")


class _Backbone(FrozenBatchNormMixin, Encoder):
    """What the timm and CLIP encoders share: patch tokens at the built side, or a map pooled
    to ``grid_size``. A subclass sets ``tokens``, ``family``, ``name``, ``image_size``,
    ``pool`` and ``grid_size`` and gives ``_tokens``, ``_token_grid`` and ``_map``."""

    family: str
    tokens: bool
    pool: nn.Module | None
    grid_size: int | None

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, S, S) -> patch tokens (B, N, D), row-major."""
        raise NotImplementedError

    def _token_grid(self, height: int, width: int) -> tuple[int, int]:
        raise NotImplementedError

    def _map(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the last feature map (B, D, h, w)."""
        raise NotImplementedError

    def grid(self, height: int, width: int) -> tuple[int, int]:
        if self.tokens:
            return self._token_grid(height, width)
        if self.grid_size:
            return self.grid_size, self.grid_size
        return self.probe_grid(self._map, height, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
                raise ValueError(
                    f"{self.family} {self.name} built for {self.image_size} px images got "
                    f"{tuple(images.shape[-2:])}: set encoder.image_size to data.image_size"
                )
            return self._tokens(self.normalise(images))
        features = self._map(images)  # (B, D, h, w)
        if self.pool is not None:
            features = self.pool(features)
        return features.flatten(2).transpose(1, 2)


class TimmEncoder(_Backbone):
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
        finetune: ``all`` | ``none`` | ``last_N`` over a CNN's stages (the stem first) or a
            ViT's transformer blocks (the patch embedding first; the final norm goes with the
            last block). ``none`` freezes every parameter.
        grid_size: adaptive-pool a CNN's map to ``grid_size`` x ``grid_size``; None keeps it.
        image_size: the side the model is built for (``data.image_size``).
    """

    def __init__(
        self,
        name: str = "resnet50",
        pretrained: bool = False,
        finetune: str = "all",
        grid_size: int | None = None,
        image_size: int = 224,
    ) -> None:
        import timm.data

        probe = _timm_probe(name)
        self.data_config = timm.data.resolve_data_config({}, model=probe)
        super().__init__(mean=self.data_config["mean"], std=self.data_config["std"])
        self.family, self.name, self.image_size = "timm", name, image_size
        self.tokens = _plain_vit(probe)
        load = load_pretrained(pretrained)
        if load:
            check_weights_reachable(f"timm model {name}", probe.pretrained_cfg.get("hf_hub_id"))
        self.model = _timm_model(name, load, self.tokens, image_size)
        note_preprocessing(f"timm {name}", self.data_config, image_size, bool(pretrained))
        if self.tokens:
            self._use_tokens(finetune)
        else:
            self._use_map(finetune, grid_size)

    def _use_tokens(self, finetune: str) -> None:
        model = self.model
        for name in HEAD_ONLY:
            if isinstance(getattr(model, name, None), nn.Module):
                setattr(model, name, nn.Identity())
        embed = model.patch_embed
        self.token_grid = tuple(int(side) for side in embed.grid_size)
        self.prefix = int(model.num_prefix_tokens)
        self.out_dim = int(model.num_features)
        stem = nn.ModuleList([embed, getattr(model, "norm_pre", nn.Identity())])
        *blocks, last = list(model.blocks)
        self.frozen = finetune_blocks(
            model, [stem, *blocks, nn.ModuleList([last, model.norm])], finetune
        )
        self.pool, self.grid_size = None, None

    def _use_map(self, finetune: str, grid_size: int | None) -> None:
        self.out_dim = int(self.model.feature_info.channels()[-1])
        fmt = getattr(self.model, "output_fmt", "NCHW")  # Swin and friends give NHWC maps
        self.channels_last_map = getattr(fmt, "value", fmt) == "NHWC"
        self.frozen = finetune_blocks(self.model, cnn_stages(self.model), finetune)
        self.pool = nn.AdaptiveAvgPool2d(grid_size) if grid_size else None
        self.grid_size = grid_size

    def _map(self, images: torch.Tensor) -> torch.Tensor:
        features = self.model(self.normalise(images))[-1]
        return features.permute(0, 3, 1, 2) if self.channels_last_map else features

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)[:, self.prefix :]

    def _token_grid(self, height: int, width: int) -> tuple[int, int]:
        if (height, width) == (self.image_size, self.image_size):
            return self.token_grid
        rows, columns = self.token_grid
        return height * rows // self.image_size, width * columns // self.image_size


def _plain_vit(model: nn.Module) -> bool:
    """A ViT whose ``forward_features`` gives prefix tokens then the patch grid, row-major;
    other token models (XCiT, MViT, ...) are served through ``features_only`` maps."""
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    return (
        grid is not None
        and len(tuple(grid)) == 2
        and all(hasattr(model, key) for key in ("num_prefix_tokens", "blocks", "norm"))
    )


def _timm_probe(name: str) -> nn.Module:
    """The classification model without weights, on the meta device where it can be (only its
    configuration and structure are read)."""
    import timm

    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
        raise ValueError(f"encoder.name={name!r} is not a timm model; e.g. {close}")
    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, num_classes=0)
    except Exception:  # an initialiser that needs real tensors
        return timm.create_model(name, pretrained=False, num_classes=0)


def _timm_model(name: str, load: bool, tokens: bool, image_size: int) -> nn.Module:
    """The model to run: tokens at ``image_size``, or ``features_only``'s last map."""
    import timm

    if tokens:
        options: dict[str, Any] = {"num_classes": 0, "img_size": image_size}
    else:
        options = {"features_only": True, "out_indices": (-1,), "img_size": image_size}
    try:
        try:
            return timm.create_model(name, pretrained=load, **options)
        except TypeError:  # a CNN that takes any size has no img_size
            options.pop("img_size")
            return timm.create_model(name, pretrained=load, **options)
    except OSError as error:  # the weights could not be read or fetched
        raise weights_error(f"timm model {name}", None, str(error).splitlines()[0]) from None
    except (AttributeError, AssertionError, RuntimeError, TypeError) as error:
        raise _unsupported("timm", name, error) from None


class OpenCLIPEncoder(_Backbone):
    """A CLIP image tower from open_clip (``encoder=open_clip encoder.name=ViT-B-32``).

    A ViT tower gives its patch tokens after the final LayerNorm (the class token dropped); a
    ResNet tower (``RN50``, ``RN101``, ...) gives its last stage's map, before CLIP's attention
    pooling. The text tower and the projection heads are not kept. Images are normalised with
    the tower's own mean and std (OpenAI's CLIP statistics for the OpenAI and LAION weights);
    a tag trained with QuickGELU (``openai``) builds the tower with it.

    Args:
        name: an OpenAI-style open_clip tower (``RN50``, ``RN101``, ``RN50x4``, ``ViT-B-32``,
            ``ViT-B-16``, ``ViT-L-14``, ...); towers built from timm (ConvNeXt, SigLIP) are
            ``encoder=timm`` models.
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

        tag = _clip_tag(name, pretrained)
        visual, trained_side = _clip_tower(name, tag, image_size)
        preprocess = open_clip.get_model_preprocess_cfg(visual) or {}
        mean = tuple(preprocess.get("mean") or open_clip.OPENAI_DATASET_MEAN)
        std = tuple(preprocess.get("std") or open_clip.OPENAI_DATASET_STD)
        super().__init__(mean=mean, std=std)
        self.data_config = {
            "mean": mean, "std": std, "input_size": (3, trained_side, trained_side),
            "interpolation": preprocess.get("interpolation", "bicubic"),
        }  # fmt: skip
        note_preprocessing(f"CLIP {name} ({tag})", self.data_config, image_size, tag is not None)
        self.family, self.name, self.image_size = "CLIP", name, image_size
        self.tokens = hasattr(visual, "transformer")
        self.visual = visual
        if self.tokens:
            visual.proj = None  # the contrastive projection: not used for regions
            self.patch = tuple(visual.patch_size)
            self.out_dim = int(visual.transformer.width)
            *blocks, last = list(visual.transformer.resblocks)
            stem = nn.ModuleList([visual.conv1, visual.ln_pre])
            stages = [stem, *blocks, nn.ModuleList([last, visual.ln_post])]
            self.pool, self.grid_size = None, None
        else:
            self.out_dim = int(visual.attnpool.k_proj.in_features)
            visual.attnpool = nn.Identity()  # CLIP's attention pooling: not used for regions
            stem = nn.ModuleList(
                [getattr(visual, f"{part}{i}") for i in (1, 2, 3) for part in ("conv", "bn")]
            )  # the three-convolution stem (``visual.stem`` is a method)
            stages = [stem, visual.layer1, visual.layer2, visual.layer3, visual.layer4]
            self.pool = nn.AdaptiveAvgPool2d(grid_size) if grid_size else None
            self.grid_size = grid_size
        self.frozen = finetune_blocks(visual, stages, finetune)

    def _map(self, images: torch.Tensor) -> torch.Tensor:
        out = self.visual.forward_intermediates(
            self.normalise(images), indices=1, intermediates_only=True
        )
        return out["image_intermediates"][-1]  # (B, D, h, w)

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        out = self.visual.forward_intermediates(
            images, indices=1, intermediates_only=True, normalize_intermediates=True,
            output_fmt="NLC",
        )  # fmt: skip
        return out["image_intermediates"][-1]  # patch tokens after ln_post

    def _token_grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch[0], width // self.patch[1]


def _clip_tag(name: str, pretrained: bool | str | None) -> str | None:
    """The weights tag of ``encoder.pretrained`` (None: random weights), checked."""
    import open_clip

    if name not in open_clip.list_models():
        towers = [m for m in open_clip.list_models() if m.startswith(("RN", "ViT-B", "ViT-L"))]
        raise ValueError(f"encoder.name={name!r} is not an open_clip model; e.g. {towers[:12]}")
    if pretrained is True:
        raise ValueError(
            "encoder.pretrained for open_clip is a weights tag, e.g. "
            f"{open_clip.list_pretrained_tags_by_model(name)[:3]}"
        )
    return None if pretrained in (False, None, "", "false", "none") else str(pretrained)


def _clip_tower(name: str, tag: str | None, image_size: int) -> tuple[nn.Module, int]:
    """The image tower of ``name`` (weights ``tag``) and the side it was trained at."""
    import open_clip

    vision = (open_clip.get_model_config(name) or {}).get("vision_cfg") or {}
    if "timm_model_name" in vision or "hf_model_name" in vision or vision.get("attentional_pool"):
        raise ValueError(
            f"encoder=open_clip takes OpenAI-style CLIP towers (RN50, RN101, ViT-B-32, ViT-B-16, "
            f"ViT-L-14, ...); {name}'s image tower is not one (a timm model or an attentional "
            "pool): use encoder=timm with its timm name"
        )
    resnet = isinstance(vision.get("layers"), list | tuple)
    pretrained_cfg = (open_clip.get_pretrained_cfg(name, tag) or {}) if tag else {}
    options: dict[str, Any] = {}
    if pretrained_cfg.get("quick_gelu"):
        options["force_quick_gelu"] = True  # the activation these weights were trained with
    if not resnet:
        options["force_image_size"] = image_size  # a ResNet tower takes any size as it is
    load = tag if load_pretrained(tag) else None
    if load:
        repo = str(pretrained_cfg.get("hf_hub", "")).rstrip("/") or None
        check_weights_reachable(f"open_clip {name} ({tag})", repo)
    try:
        clip = open_clip.create_model(name, pretrained=load, **options)
    except OSError as error:  # the weights could not be read or fetched
        reason = str(error).splitlines()[0]
        raise weights_error(f"open_clip {name} ({tag})", None, reason) from None
    return clip.visual, int(vision.get("image_size", image_size))
