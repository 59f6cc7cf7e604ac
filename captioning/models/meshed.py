"""M², the Meshed-Memory Transformer (Cornia et al. 2020, "Meshed-Memory Transformer for Image
Captioning"): the memory-augmented refiner and the meshed decoder that reads all its layers."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from captioning.models.attention import prepare_masked
from captioning.models.refiners import EncoderLayer, StackedRefiner, input_projection
from captioning.models.state import State
from captioning.models.transformer import SelfAttention, TransformerDecoderBase


class MemoryRefiner(StackedRefiner):
    """``refiner=memory``: M²'s memory-augmented encoder.

    Each layer is a post-norm Transformer encoder layer whose self-attention keys and values
    are extended with ``memory_slots`` learned slots (always visible, never masked; see
    :class:`~captioning.models.refiners.RegionSelfAttention`), then a ReLU FFN, each with
    residual + LayerNorm. It returns every layer's output, concatenated on the feature axis
    (``levels`` = ``layers`` by default; ``levels=1`` gives the last layer alone, for a decoder
    that reads one).

    The regions are first embedded to ``d_model`` (linear + ReLU + dropout + LayerNorm, as in
    the authors' code) when the widths differ. Where it departs from the paper: nothing in the
    layers; the layer outputs are concatenated on the feature axis where the authors' code
    stacks them on a new one (the refiner contract carries one tensor).

    Args:
        region_dim: width of the regions (the encoder's ``out_dim``).
        layers / d_model / heads / ffn_dim / dropout: the paper's 3 / 512 / 8 / 2048 / 0.1.
        memory_slots: learned key/value slots per layer (the paper's 40).
        levels: how many of the last layers' outputs to return (default: all of them).
    """

    def __init__(
        self,
        region_dim: int,
        layers: int = 3,
        d_model: int = 128,
        heads: int = 4,
        ffn_dim: int = 512,
        dropout: float = 0.1,
        memory_slots: int = 40,
        levels: int | None = None,
    ) -> None:
        super().__init__(
            d_model,
            [EncoderLayer(d_model, heads, ffn_dim, dropout, memory_slots) for _ in range(layers)],
            layers if levels is None else levels,
            input_projection(region_dim, d_model, relu=True, dropout=dropout, norm=True),
        )


class MeshedDecoderLayer(nn.Module):
    """One meshed decoder layer (post-norm, as M²):

    ``Y = LN(X + SelfAttn(X))`` (causal, key/value cache); for each encoder level i,
    ``C_i = LN(Y + W_o CrossAttn(Y, level_i))`` and ``alpha_i = sigmoid(W_i [Y; C_i] + b_i)``;
    ``M = sum_i alpha_i * C_i / sqrt(levels)``; out ``LN(M + FFN(M))``.

    One cross-attention module (and its LayerNorm) serves every level, as in the authors'
    code: the levels are outputs of one encoder in one feature space, and what is particular
    to a level is its gate ``W_i``. Reported weights: the mean over levels of the
    cross-attention weights (a distribution, zero on padding, like each level's).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        level_dim: int,
        levels: int,
        attention: Callable[..., nn.Module],
    ) -> None:
        super().__init__()
        self.self_attention = SelfAttention(dim, heads, dropout)
        self.self_norm = nn.LayerNorm(dim)
        self.cross_attention = attention(query_dim=dim, region_dim=level_dim)
        self.cross_out = nn.Linear(self.cross_attention.out_dim, dim)
        self.cross_norm = nn.LayerNorm(dim)
        self.level_gates = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(levels))
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.ffn_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: list[State],
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attended, new_cache = self.self_attention(x, cache)
        words = self.self_norm(x + self.dropout(attended))  # (B, T, D): Y
        meshed, weights = 0.0, 0.0
        for gate, level in zip(self.level_gates, memory, strict=True):
            context, level_weights = self.cross_attention.attend(words, level)  # (B,T,Dc), (B,T,N)
            level_context = self.cross_norm(words + self.dropout(self.cross_out(context)))  # C_i
            alpha = torch.sigmoid(gate(torch.cat([words, level_context], dim=-1)))  # (B, T, D)
            meshed = meshed + alpha * level_context
            weights = weights + level_weights
        meshed = meshed / math.sqrt(len(memory))
        out = self.ffn_norm(meshed + self.dropout(self.ffn(meshed)))
        return out, weights / len(memory), new_cache


class MeshedDecoder(TransformerDecoderBase):
    """``decoder=meshed``: M²'s meshed decoder over the ``levels`` outputs of a refiner.

    The regions (B, N, encoder_dim) are ``levels`` chunks of ``encoder_dim // levels`` (what
    ``refiner=memory`` gives); every layer cross-attends to each chunk separately and mixes
    the results with learned gates (:class:`MeshedDecoderLayer`). With ``levels=1`` it reads
    any encoder's or refiner's regions. The :class:`~captioning.models.Captioner` passes
    ``levels`` from the refiner. Both modes run the same layers (the key/value cache of
    :class:`~captioning.models.TransformerDecoder` in ``step``).

    Where it departs from the paper: positions and embeddings are
    :class:`~captioning.models.TransformerDecoder`'s (words scaled by sqrt(d_model),
    sinusoidal or learned positions, classifier tied to the embedding by default; M² adds
    unscaled words to fixed sinusoids and has an untied classifier); the cross-attention is
    any ``conf/attention`` module (the paper's is multi-head, ``attention=multihead``),
    followed by a linear layer to ``d_model``.

    Args:
        vocab_size: output vocabulary size.
        encoder_dim: width of the regions: ``levels`` x the width of one level.
        attention: ``attention(query_dim=d_model, region_dim=encoder_dim // levels)``, one
            module per decoder layer shared by the levels.
        levels: how many encoder outputs the regions hold (``refiner.levels``).
        d_model / heads / layers / ffn_dim / dropout: the paper's 512 / 8 / 3 / 2048 / 0.1.
        positions / max_len / tie_embeddings / pad_id: as for ``TransformerDecoder``.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder_dim: int,
        attention: Callable[..., nn.Module],
        levels: int = 1,
        d_model: int = 128,
        heads: int = 4,
        layers: int = 3,
        ffn_dim: int = 512,
        dropout: float = 0.1,
        positions: str = "sinusoidal",
        max_len: int = 64,
        tie_embeddings: bool = True,
        pad_id: int = 0,
    ) -> None:
        if levels < 1 or encoder_dim % levels:
            raise ValueError(
                f"decoder.levels={levels} must be >= 1 and divide the regions' width "
                f"{encoder_dim} (levels x the refiner's d_model)"
            )
        super().__init__(vocab_size, d_model, dropout, positions, max_len, pad_id)
        self.levels = levels
        self.layers = nn.ModuleList(
            MeshedDecoderLayer(
                d_model, heads, ffn_dim, dropout, encoder_dim // levels, levels, attention
            )
            for _ in range(layers)
        )
        self.norm = nn.Identity()  # post-norm: every layer ends in a LayerNorm
        self.build_classifier(tie_embeddings)

    def layer_memory(
        self, layer: nn.Module, regions: torch.Tensor, mask: torch.Tensor | None
    ) -> list[State]:
        return [
            State(prepare_masked(layer.cross_attention, level, mask))
            for level in regions.chunk(self.levels, dim=-1)
        ]
