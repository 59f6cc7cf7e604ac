"""The encoder check: regions (B, N, out_dim) and a grid of N cells."""

from __future__ import annotations

import torch
from torch import nn

from captioning.testing._common import (
    device_of,
    evaluating,
    expect_shape,
    fail_unless,
    seeded_generator,
)


@torch.no_grad()
def check_encoder(
    encoder: nn.Module,
    image_size: int | tuple[int, int] = 224,
    *,
    batch: int = 2,
    images: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """``encoder(images (B, 3, H, W)) -> regions (B, N, out_dim)``, finite, with
    ``grid(H, W) == (h, w)`` and ``h * w == N``. Runs in eval mode on random images in [0, 1]
    (or on ``images``); returns the regions."""
    name = type(encoder).__name__
    out_dim = getattr(encoder, "out_dim", None)
    fail_unless(
        isinstance(out_dim, int) and not isinstance(out_dim, bool) and out_dim >= 1,
        f"{name}.out_dim must be an integer >= 1 (the region width), got {out_dim!r}",
    )
    fail_unless(callable(getattr(encoder, "grid", None)), f"{name} has no grid(height, width)")
    if images is None:
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        images = torch.rand(batch, 3, height, width, generator=seeded_generator(seed))
    images = images.to(device_of(encoder))
    height, width = int(images.shape[-2]), int(images.shape[-1])
    with evaluating(encoder):
        regions = encoder(images)
    fail_unless(
        isinstance(regions, torch.Tensor) and regions.dim() == 3,
        f"{name}({tuple(images.shape)}): expected regions (B, N, out_dim), got "
        f"{tuple(regions.shape) if isinstance(regions, torch.Tensor) else type(regions).__name__}",
    )
    regions_n = int(regions.shape[1])
    expect_shape(
        regions, (len(images), regions_n, out_dim), f"{name} regions of {height}x{width} images"
    )
    grid = encoder.grid(height, width)
    fail_unless(
        isinstance(grid, tuple) and len(grid) == 2 and all(isinstance(side, int) for side in grid),
        f"{name}.grid({height}, {width}) must be a tuple (h, w) of ints, got {grid!r}",
    )
    fail_unless(
        grid[0] * grid[1] == regions_n,
        f"{name}.grid({height}, {width}) = {grid}: {grid[0] * grid[1]} cells for "
        f"{regions_n} regions",
    )
    return regions
