"""Image encoders: ``forward(images (B,3,H,W) in [0,1]) -> regions (B, N, out_dim)``.

Every encoder normalises its input with the statistics its weights were trained with,
exposes ``out_dim`` and ``grid(H, W) -> (h, w)`` so attention over N maps back onto the
image (N = h * w, row-major).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Encoder(nn.Module):
    """Base: input normalisation and the shared attributes."""

    out_dim: int

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def grid(self, height: int, width: int) -> tuple[int, int]:
        raise NotImplementedError

    @torch.no_grad()
    def probe_grid(
        self, feature_map: Callable[[torch.Tensor], torch.Tensor], height: int, width: int
    ) -> tuple[int, int]:
        """The (h, w) of ``feature_map`` (B, D, h, w) on one blank image, run in eval mode: a
        probe must not move BatchNorm statistics."""
        was_training = self.training
        self.eval()
        shape = feature_map(torch.zeros(1, 3, height, width, device=self.mean.device)).shape
        self.train(was_training)
        return int(shape[-2]), int(shape[-1])


class SmallCNN(Encoder):
    """A fast CPU encoder: strided conv blocks to a fixed grid plus learned positions.

    Args:
        channels: output channels of each conv block; each but the last halves the resolution.
        grid_size: the feature map is average-pooled to ``grid_size`` x ``grid_size`` regions.
        position_embedding: add a learned embedding per region, so attention can tell
            where a region is (plain conv features are nearly translation invariant).
        kernel_size: kernel of the strided blocks. Even (4, `conf/encoder/small_cnn.yaml`)
            keeps every region centred on its grid cell; an odd kernel with stride 2 centres
            output i on input pixel 2i, not 2i + 0.5, and three such blocks shift each region
            3.5 px up-left of the cell that attention maps and grounding draw it at (Shapes
            grounding 0.89 -> 0.97 when the maps of a kernel-3 model are shifted back by
            4 px). The default 3 rebuilds checkpoints made before the option existed.
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (32, 64, 128, 128),
        grid_size: int = 8,
        position_embedding: bool = True,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if kernel_size < 2:
            raise ValueError(f"encoder.kernel_size must be >= 2, got {kernel_size}")
        layers: list[nn.Module] = []
        in_channels = 3
        for i, out_channels in enumerate(channels):
            strided = i < len(channels) - 1
            kernel = kernel_size if strided else 3  # the last block keeps the resolution
            layers += [
                nn.Conv2d(
                    in_channels,
                    out_channels,
                    kernel,
                    stride=2 if strided else 1,
                    padding=(kernel - 1) // 2,
                    bias=False,
                ),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid_size)
        self.grid_size = grid_size
        self.out_dim = in_channels
        self.position = (
            nn.Parameter(torch.zeros(1, grid_size * grid_size, in_channels))
            if position_embedding
            else None
        )
        if self.position is not None:
            nn.init.normal_(self.position, std=0.02)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return self.grid_size, self.grid_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.features(self.normalise(images)))  # (B, D, g, g)
        regions = features.flatten(2).transpose(1, 2)  # (B, N, D)
        if self.position is not None:
            regions = regions + self.position
        return regions


RESNET_WIDTHS = {18: 512, 34: 512, 50: 2048, 101: 2048, 152: 2048}

_FROM_CHECKPOINT: ContextVar[bool] = ContextVar("weights_from_checkpoint", default=False)


@contextmanager
def weights_from_checkpoint() -> Iterator[None]:
    """Build encoders without reading their pretrained weights: a checkpoint's state dict is
    about to replace them, so evaluating a model needs the checkpoint alone."""
    token = _FROM_CHECKPOINT.set(True)
    try:
        yield
    finally:
        _FROM_CHECKPOINT.reset(token)


def load_pretrained(pretrained: object) -> bool:
    """Whether pretrained weights are to be read now (not when a checkpoint brings its own)."""
    return bool(pretrained) and not _FROM_CHECKPOINT.get()


def load_torchvision_model(name: str, pretrained: bool) -> nn.Module:
    """A torchvision model, with its default weights when ``pretrained``.

    Fails fast with the file to place by hand when the weights cannot be downloaded.
    """
    wanted = load_pretrained(pretrained)
    weights = torchvision.models.get_model_weights(name).DEFAULT if wanted else None
    try:
        return torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub"
        file = Path(weights.url).name if weights is not None else "?"
        raise RuntimeError(
            f"could not fetch the pretrained weights of {name} ({error}). Download "
            f"{weights.url if weights is not None else name} and place it at "
            f"{hub / 'checkpoints' / file}, or set encoder.pretrained=false"
        ) from None


def apply_finetune(blocks: list[nn.Module], finetune: str) -> list[nn.Module]:
    """Freeze all but the last blocks: ``all`` | ``none`` | ``last_N``; returns the frozen ones."""
    if finetune == "all":
        count = len(blocks)
    elif finetune == "none":
        count = 0
    elif finetune.startswith("last_") and finetune[5:].isdigit():
        count = min(int(finetune[5:]), len(blocks))
    else:
        raise ValueError(
            f"encoder.finetune must be all, none or last_N (e.g. last_2), got {finetune!r}"
        )
    frozen = blocks[: len(blocks) - count]
    for block in frozen:
        block.requires_grad_(False)
    return frozen


class FrozenBatchNormMixin:
    """Frozen blocks stay in eval mode, so BatchNorm keeps its running statistics."""

    frozen: list[nn.Module]

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        for block in self.frozen:
            block.eval()
        return self


class ConvMapEncoder(FrozenBatchNormMixin, Encoder):
    """A CNN ``body`` whose last feature map, optionally pooled to a fixed grid, is the regions."""

    body: nn.Module

    def __init__(self, grid_size: int | None) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(grid_size) if grid_size else nn.Identity()
        self.grid_size = grid_size

    def grid(self, height: int, width: int) -> tuple[int, int]:
        if self.grid_size:
            return self.grid_size, self.grid_size
        return self.probe_grid(self.body, height, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.body(self.normalise(images)))  # (B, D, h, w)
        return features.flatten(2).transpose(1, 2)  # (B, N, D)


class ResNetEncoder(ConvMapEncoder):
    """Torchvision ResNet: the last conv map as regions (7x7 for 224 px input).

    Args:
        depth: 18, 34, 50, 101 or 152.
        pretrained: load torchvision's ImageNet weights (needs the network or a cached file).
        finetune: ``all`` | ``none`` | ``last_N`` (the last N of the stem and four stages).
        grid_size: adaptive-pool the map to a fixed grid (e.g. 14); None keeps its size.
    """

    def __init__(
        self,
        depth: int = 50,
        pretrained: bool = False,
        finetune: str = "all",
        grid_size: int | None = None,
    ) -> None:
        super().__init__(grid_size)
        if depth not in RESNET_WIDTHS:
            raise ValueError(f"encoder.depth must be one of {sorted(RESNET_WIDTHS)}, got {depth}")
        backbone = load_torchvision_model(f"resnet{depth}", pretrained)
        stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        self.body = nn.Sequential(
            stem, backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4
        )
        self.frozen = apply_finetune(list(self.body), finetune)
        self.out_dim = RESNET_WIDTHS[depth]

    def grid(self, height: int, width: int) -> tuple[int, int]:
        if self.grid_size:
            return self.grid_size, self.grid_size
        h, w = height, width
        for _ in range(5):  # stem conv, max-pool and three strided stages: no probe needed
            h, w = math.floor((h - 1) / 2) + 1, math.floor((w - 1) / 2) + 1
        return h, w


CNN_FAMILIES = {"vgg16": 512, "convnext_tiny": 768, "efficientnet_b0": 1280}


class TorchvisionCNN(ConvMapEncoder):
    """A torchvision CNN's ``features`` (VGG16 conv5, ConvNeXt-T, EfficientNet-B0) as regions.

    Args:
        name: ``vgg16`` | ``convnext_tiny`` | ``efficientnet_b0``.
        pretrained: torchvision's ImageNet weights.
        finetune: ``all`` | ``none`` | ``last_N`` over the ``features`` blocks.
        grid_size: adaptive-pool to a fixed grid; None keeps the map's size.
    """

    def __init__(
        self,
        name: str = "convnext_tiny",
        pretrained: bool = False,
        finetune: str = "all",
        grid_size: int | None = None,
    ) -> None:
        super().__init__(grid_size)
        if name not in CNN_FAMILIES:
            raise ValueError(f"encoder.name must be one of {sorted(CNN_FAMILIES)}, got {name!r}")
        features = load_torchvision_model(name, pretrained).features
        if name == "vgg16":
            features = features[:-1]  # conv5_3 map (14x14 at 224 px), before the last max-pool
        self.body = features
        self.frozen = apply_finetune(list(self.body), finetune)
        self.out_dim = CNN_FAMILIES[name]


VIT_NAMES = ("vit_b_16", "vit_b_32", "vit_l_16")


def conv_stem(patch_size: int, width: int) -> nn.Sequential:
    """3x3 stride-2 convolutions down to the patch grid, then a 1x1 projection to the width:
    the convolutional stem of Xiao et al. 2021 ("Early convolutions help transformers see
    better"), which lets a small ViT learn from a few thousand images."""
    layers: list[nn.Module] = []
    channels = 3
    for i in range(int(math.log2(patch_size))):
        out = min(width, 32 * 2**i)
        layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False)]
        layers += [nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        channels = out
    layers.append(nn.Conv2d(channels, width, 1))
    return nn.Sequential(*layers)


class ViTEncoder(FrozenBatchNormMixin, Encoder):
    """Torchvision ViT: the patch tokens of the last block as regions (class token dropped).

    Args:
        name: ``vit_b_16`` | ``vit_b_32`` | ``vit_l_16``, or ``custom`` (sizes below,
            trained from scratch: a CPU-sized ViT for Shapes).
        pretrained: torchvision's ImageNet weights (then images must be 224 px).
        finetune: ``all`` | ``none`` | ``last_N`` over the transformer blocks.
        image_size: input side the position embeddings are built for (224 when pretrained).
        patch_size / layers / heads / width / mlp_dim: the ``custom`` ViT's sizes.
        stem: ``patch`` (one strided convolution per patch, as in ViT) or ``conv`` (a small
            convolutional stem, ``custom`` only; see :func:`conv_stem`).
    """

    def __init__(
        self,
        name: str = "vit_b_16",
        pretrained: bool = False,
        finetune: str = "all",
        image_size: int = 224,
        patch_size: int = 8,
        layers: int = 2,
        heads: int = 4,
        width: int = 128,
        mlp_dim: int = 256,
        stem: str = "patch",
    ) -> None:
        super().__init__()
        if stem not in ("patch", "conv"):
            raise ValueError(f"encoder.stem must be patch or conv, got {stem!r}")
        if stem == "conv" and (name != "custom" or patch_size & (patch_size - 1)):
            raise ValueError("encoder.stem=conv needs encoder.name=custom and a power-of-2 patch")
        if name not in (*VIT_NAMES, "custom"):
            raise ValueError(f"encoder.name must be one of {[*VIT_NAMES, 'custom']}, got {name!r}")
        if pretrained and (name == "custom" or image_size != 224):
            raise ValueError(
                "encoder.pretrained=true needs a torchvision ViT and encoder.image_size=224"
            )
        if name == "custom":
            vit = VisionTransformer(
                image_size=image_size, patch_size=patch_size, num_layers=layers, num_heads=heads,
                hidden_dim=width, mlp_dim=mlp_dim,
            )  # fmt: skip
            if stem == "conv":
                vit.conv_proj = conv_stem(patch_size, width)
        elif pretrained:
            vit = load_torchvision_model(name, True)
        else:
            vit = torchvision.models.get_model(name, weights=None, image_size=image_size)
        self.vit = vit
        self.vit.heads = nn.Identity()
        self.patch = vit.patch_size
        self.image_size = image_size
        blocks = [nn.ModuleList([vit.conv_proj]), *vit.encoder.layers]
        self.frozen = apply_finetune(blocks, finetune)
        if finetune != "all":
            vit.class_token.requires_grad_(False)
            vit.encoder.pos_embedding.requires_grad_(False)
        self.out_dim = vit.hidden_dim

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch, width // self.patch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"ViT encoder built for {self.image_size} px images got {tuple(images.shape[-2:])}: "
                "set data.image_size and encoder.image_size to the same value"
            )
        x = self.vit._process_input(self.normalise(images))  # (B, N, D)
        cls = self.vit.class_token.expand(x.shape[0], -1, -1)
        x = self.vit.encoder(torch.cat([cls, x], dim=1))  # (B, 1 + N, D)
        return x[:, 1:]  # (B, N, D): patch tokens, row-major over the grid
