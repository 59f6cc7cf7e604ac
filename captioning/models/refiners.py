"""Refining encoders: between the encoder and the decoder, over grid cells or regions alike.

The contract (``conf/refiner/``): ``refiner(region_dim=) -> module`` (a Hydra partial), with
``out_dim`` and ``levels`` and ``forward(regions (B, N, region_dim), mask (B, N) | None) ->
(B, N, out_dim)``. A refiner that returns several layers' outputs (M²'s meshed decoder reads
them all) concatenates them on the feature axis: ``levels`` chunks of ``out_dim // levels``.
Padded regions (mask False) must not change the real regions' outputs.

:class:`StackedRefiner` is the frame the refiners here share (the input projection, the
key-padding mask, the last ``levels`` layer outputs); :class:`TransformerRefiner` stacks
plain self-attention layers, ``captioning.models.aoa.AoARefiner`` AoA layers and
``captioning.models.meshed.MemoryRefiner`` memory-augmented ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
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


def key_padding(mask: torch.Tensor | None) -> torch.Tensor | None:
    """The (B, 1, 1, N) ``attn_mask`` of ``F.scaled_dot_product_attention`` (True attends) for
    a region mask (B, N). An image without a single real region attends to all its (zeroed)
    positions instead of to none, which would be a softmax over nothing (NaN)."""
    if mask is None:
        return None
    keep = mask | ~mask.any(dim=1, keepdim=True)  # (B, N)
    return keep[:, None, None, :]


def zero_padding(regions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``regions`` (B, N, D) with the padded rows (``mask`` False) set to 0."""
    if mask is None:
        return regions
    return regions.masked_fill(~mask.unsqueeze(-1), 0.0)


class RegionSelfAttention(nn.Module):
    """Multi-head self-attention over the regions, padded keys masked out.

    With ``memory_slots`` > 0 the keys and values are extended by that many learned slots
    (Cornia et al. 2020, M²'s memory-augmented attention): a priori knowledge no region holds,
    visible to every query and never masked. As in the authors' code, the slots live in the
    projected key/value space, start at std 1/head_dim (keys) and 1/slots (values) and are
    scaled by sqrt(head_dim) and sqrt(slots) when used.

    Args:
        dim: width of the regions (a multiple of ``heads``).
        heads: number of heads.
        dropout: dropout on the attention probabilities (training only).
        memory_slots: learned key/value slots (0: plain self-attention).
        project_out: end with the output projection (the AoA refiner's gate replaces it).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        memory_slots: int = 0,
        project_out: bool = True,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"refiner.d_model={dim} must be a multiple of refiner.heads={heads}")
        if memory_slots < 0:
            raise ValueError(f"refiner.memory_slots must be >= 0, got {memory_slots}")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim) if project_out else nn.Identity()
        self.dropout = dropout
        self.memory_slots = memory_slots
        if memory_slots:
            self.memory_keys = nn.Parameter(torch.randn(1, memory_slots, dim) / self.head_dim)
            self.memory_values = nn.Parameter(torch.randn(1, memory_slots, dim) / memory_slots)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # (B, H, L, d)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) regions, ``keep`` (B, 1, 1, N) from :func:`key_padding` -> (B, N, D)."""
        batch, length, dim = x.shape
        q, k, v = (self._split(part) for part in self.qkv(x).chunk(3, dim=-1))  # (B, H, N, d)
        if self.memory_slots:
            keys = math.sqrt(self.head_dim) * self.memory_keys.expand(batch, -1, -1)
            values = math.sqrt(self.memory_slots) * self.memory_values.expand(batch, -1, -1)
            k = torch.cat([k, self._split(keys)], dim=2)  # (B, H, N + M, d)
            v = torch.cat([v, self._split(values)], dim=2)
            if keep is not None:  # the slots are always visible
                keep = F.pad(keep, (0, self.memory_slots), value=True)  # (B, 1, 1, N + M)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, N, d)
        return self.out(out.transpose(1, 2).reshape(batch, length, dim))


class EncoderLayer(nn.Module):
    """Post-norm Transformer encoder layer (Vaswani et al. 2017), as M² writes it:
    ``x = LN(x + SelfAttn(x)); x = LN(x + FFN(x))``, the FFN with a ReLU.

    Args:
        dim / heads / ffn_dim / dropout: the layer's sizes.
        memory_slots: learned slots in the self-attention (:class:`RegionSelfAttention`).
    """

    def __init__(
        self, dim: int, heads: int, ffn_dim: int, dropout: float, memory_slots: int = 0
    ) -> None:
        super().__init__()
        self.self_attention = RegionSelfAttention(dim, heads, dropout, memory_slots)
        self.attention_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.ffn_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.self_attention(x, keep)))  # (B, N, D)
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class StackedRefiner(nn.Module):
    """A stack of layers ``layer(x (B, N, D), keep) -> (B, N, D)`` over the regions.

    The padding is a masked key in every layer, and is zeroed on the way in (a masked value
    still meets its zero weight, and 0 x NaN is NaN) and on the way out. The output is the last ``levels`` layers'
    outputs concatenated on the feature axis (``out_dim = levels * d_model``), the earliest
    first: ``levels=1`` is the last layer alone.

    Args:
        d_model: the layers' width.
        layers: the layer modules.
        levels: how many of the last layers' outputs to return (1..len(layers)).
        projection: region_dim -> d_model on the way in (an ``nn.Identity`` when equal).
    """

    def __init__(
        self,
        d_model: int,
        layers: Sequence[nn.Module],
        levels: int,
        projection: nn.Module,
    ) -> None:
        super().__init__()
        if not 1 <= levels <= len(layers):
            raise ValueError(
                f"refiner.levels={levels} must be between 1 and refiner.layers={len(layers)}"
            )
        self.projection = projection
        self.layers = nn.ModuleList(layers)
        self.levels = levels
        self.out_dim = levels * d_model

    def layer_outputs(
        self, regions: torch.Tensor, mask: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Every layer's output (B, N, d_model), the first layer's first."""
        keep = key_padding(mask)
        x = self.projection(zero_padding(regions, mask))  # (B, N, D)
        outputs = []
        for layer in self.layers:
            x = layer(x, keep)
            outputs.append(x)
        return outputs

    def forward(self, regions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        outputs = self.layer_outputs(regions, mask)[-self.levels :]
        return zero_padding(torch.cat(outputs, dim=-1), mask)  # (B, N, levels * D)


def input_projection(
    region_dim: int, d_model: int, relu: bool = False, dropout: float = 0.0, norm: bool = False
) -> nn.Module:
    """``Linear(region_dim, d_model)`` [+ ReLU + dropout] [+ LayerNorm] when the widths
    differ, else the identity."""
    if region_dim == d_model:
        return nn.Identity()
    parts: list[nn.Module] = [nn.Linear(region_dim, d_model)]
    if relu:
        parts += [nn.ReLU(), nn.Dropout(dropout)]
    if norm:
        parts.append(nn.LayerNorm(d_model))
    return nn.Sequential(*parts)


class TransformerRefiner(StackedRefiner):
    """``refiner=transformer``: Transformer encoder layers (post-norm self-attention + ReLU
    FFN, Vaswani et al. 2017) over the regions, the padded ones masked out as keys.

    The regions are projected from ``region_dim`` to ``d_model`` by a linear layer when the
    widths differ. No position encoding: a grid encoder's regions already carry theirs (the
    small CNN's learned embedding), region features their boxes (``encoder.box_embed``).

    Args:
        region_dim: width of the regions (the encoder's ``out_dim``).
        layers / d_model / heads / ffn_dim / dropout: the usual Transformer sizes.
        levels: return the last ``levels`` layers' outputs concatenated (1: the last layer;
            more for a meshed decoder).
    """

    def __init__(
        self,
        region_dim: int,
        layers: int = 2,
        d_model: int = 128,
        heads: int = 4,
        ffn_dim: int = 512,
        dropout: float = 0.1,
        levels: int = 1,
    ) -> None:
        super().__init__(
            d_model,
            [EncoderLayer(d_model, heads, ffn_dim, dropout) for _ in range(layers)],
            levels,
            input_projection(region_dim, d_model),
        )
