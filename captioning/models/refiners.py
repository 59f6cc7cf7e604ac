"""Refining encoders: between the encoder and the decoder, over grid cells or regions alike.

The contract (``conf/refiner/``): ``refiner(region_dim=) -> module`` (a Hydra partial), with
``out_dim`` and ``levels`` and ``forward(regions (B, N, region_dim), mask (B, N) | None) ->
(B, N, out_dim)``. A refiner that returns several layers' outputs (M²'s meshed decoder reads
them all) concatenates them on the feature axis: ``levels`` chunks of ``out_dim // levels``.
Padded regions (mask False) must not change the real regions' outputs.
"""

from __future__ import annotations

import torch
from torch import nn


class NoRefiner(nn.Module):
    """``refiner=none``: the regions pass through as they are (no parameters)."""

    levels = 1

    def __init__(self, region_dim: int, levels: int = 1) -> None:
        super().__init__()
        if levels != 1:
            raise ValueError(f"refiner=none gives one level, got refiner.levels={levels}")
        self.out_dim = region_dim

    def forward(self, regions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return regions
