"""Image encoders: ``forward(images (B,3,H,W) in [0,1]) -> regions (B, N, out_dim)``.

Every encoder normalises its input with the statistics its weights were trained with,
exposes ``out_dim`` and ``grid(H, W) -> (h, w)`` so attention over N maps back onto the
image (N = h * w, row-major).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
import torchvision
from torch import nn

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


class SmallCNN(Encoder):
    """A fast CPU encoder: strided conv blocks to a fixed grid plus learned positions.

    Args:
        channels: output channels of each conv block; each but the last halves the resolution.
        grid_size: the feature map is average-pooled to ``grid_size`` x ``grid_size`` regions.
        position_embedding: add a learned embedding per region, so attention can tell
            where a region is (plain conv features are nearly translation invariant).
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (32, 64, 128, 128),
        grid_size: int = 8,
        position_embedding: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for i, out_channels in enumerate(channels):
            stride = 2 if i < len(channels) - 1 else 1
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
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


def load_torchvision_model(name: str, pretrained: bool) -> nn.Module:
    """A torchvision model, with its default weights when ``pretrained``.

    Fails fast with the file to place by hand when the weights cannot be downloaded.
    """
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
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


class ResNetEncoder(Encoder):
    """Torchvision ResNet: the last conv map as regions (7x7 for 224 px input).

    Args:
        depth: 18, 34, 50, 101 or 152.
        pretrained: load torchvision's ImageNet weights (needs the network or a cached file).
        trainable: fine-tune the backbone; when False it is frozen and BatchNorm stays in eval.
        grid_size: adaptive-pool the map to a fixed grid (e.g. 14); None keeps its size.
    """

    def __init__(
        self,
        depth: int = 50,
        pretrained: bool = False,
        trainable: bool = True,
        grid_size: int | None = None,
    ) -> None:
        super().__init__()
        if depth not in RESNET_WIDTHS:
            raise ValueError(f"encoder.depth must be one of {sorted(RESNET_WIDTHS)}, got {depth}")
        backbone = load_torchvision_model(f"resnet{depth}", pretrained)
        self.body = nn.Sequential(*list(backbone.children())[:-2])  # drop avgpool and fc
        self.pool = nn.AdaptiveAvgPool2d(grid_size) if grid_size else nn.Identity()
        self.grid_size = grid_size
        self.out_dim = RESNET_WIDTHS[depth]
        self.trainable = trainable
        self.body.requires_grad_(trainable)

    def train(self, mode: bool = True) -> ResNetEncoder:
        super().train(mode)
        if not self.trainable:
            self.body.eval()  # frozen BatchNorm keeps its running statistics
        return self

    def grid(self, height: int, width: int) -> tuple[int, int]:
        if self.grid_size:
            return self.grid_size, self.grid_size
        h, w = height, width
        for _ in range(5):  # stem conv, max-pool and three strided stages
            h, w = math.floor((h - 1) / 2) + 1, math.floor((w - 1) / 2) + 1
        return h, w

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.body(self.normalise(images)))  # (B, D, h, w)
        return features.flatten(2).transpose(1, 2)  # (B, N, D)
