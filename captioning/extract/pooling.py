"""Region features: each box's part of an encoder's feature map, by ``roi_align``.

An encoder gives regions ``(B, N, D)`` row-major over its ``grid(H, W) -> (h, w)``
(:class:`captioning.models.contracts.EncoderProtocol`): that is a ``(B, D, h, w)`` map. A box
in the original image's pixels is scaled to the map along each axis (the image was resized to
a square, so x and y scale apart), ``roi_align``-ed to ``roi_size`` x ``roi_size`` cells
(``aligned=True``: pixel x maps to ``x * scale - 0.5``, a cell's centre) and mean-pooled to one
D-vector. For a square image and grid this is ``roi_align`` on boxes in resized-image pixels
with ``spatial_scale = h / image_size``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import roi_align


def feature_map(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``images (B, 3, S, S)`` in [0, 1] -> the encoder's map ``(B, D, h, w)``."""
    regions = encoder(images)  # (B, N, D)
    height, width = encoder.grid(images.shape[-2], images.shape[-1])
    batch, count, dim = regions.shape
    if count != height * width:
        raise ValueError(
            f"{type(encoder).__name__} gives {count} regions but grid(H, W) = {height}x{width}: "
            "region features need an encoder whose regions are its grid (no extra tokens)"
        )
    return regions.transpose(1, 2).reshape(batch, dim, height, width)  # (B, D, h, w)


def pool_regions(
    maps: torch.Tensor,
    boxes: list[torch.Tensor],
    sizes: list[tuple[int, int]],
    roi_size: int = 7,
    sampling_ratio: int = 2,
) -> list[torch.Tensor]:
    """Per image, its ``boxes (N_i, 4)`` (x1, y1, x2, y2 in the pixels of an image of
    ``sizes[i] = (width, height)``) pooled from ``maps (B, D, h, w)``: a ``(N_i, D)`` each."""
    dim, map_h, map_w = maps.shape[1:]
    counts = [len(b) for b in boxes]
    if not sum(counts):
        return [maps.new_zeros(0, dim) for _ in boxes]
    scaled = []
    for image_boxes, (width, height) in zip(boxes, sizes, strict=True):
        scale = torch.tensor([map_w / width, map_h / height] * 2, device=maps.device)
        scaled.append(image_boxes.to(maps.device, torch.float32) * scale)  # (N_i, 4) map units
    pooled = roi_align(
        maps.float(), scaled, output_size=roi_size, spatial_scale=1.0,
        sampling_ratio=sampling_ratio, aligned=True,
    )  # fmt: skip  # (sum N_i, D, roi, roi)
    return list(pooled.mean(dim=(2, 3)).split(counts))  # (N_i, D) each
