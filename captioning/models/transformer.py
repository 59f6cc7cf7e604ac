"""Transformer decoder: causal self-attention, cross-attention through any attention module.

Both modes of the decoder contract run the same layers: ``forward`` over a whole caption with
a causal mask, ``step`` one word at a time with a key/value cache, so a step costs O(t)
instead of re-running the prefix (O(t^2)).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from captioning.models.attention import prepare_masked
from captioning.models.state import State


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) fixed sine/cosine position codes (Vaswani et al. 2017)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    codes = torch.zeros(length, dim)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return codes


class SelfAttention(nn.Module):
    """Causal multi-head self-attention with an optional key/value cache."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"decoder.d_model={dim} must be a multiple of decoder.heads={heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, length, dim = x.shape
        q, k, v = (
            self.qkv(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )
        if cache is not None:  # the new step attends to every cached step and itself
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)  # (B, H, t, d)
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=cache is None and length > 1,
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        return self.out(out.transpose(1, 2).reshape(batch, length, dim)), (k, v)


class DecoderLayer(nn.Module):
    """Pre-norm: x + SelfAttn(LN x); x + Cross(LN x, regions); x + FFN(LN x)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        encoder_dim: int,
        attention: Callable[..., nn.Module],
    ) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(dim)
        self.self_attention = SelfAttention(dim, heads, dropout)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attention = attention(query_dim=dim, region_dim=encoder_dim)
        self.cross_out = nn.Linear(self.cross_attention.out_dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: dict[str, torch.Tensor],
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attended, new_cache = self.self_attention(self.self_norm(x), cache)
        x = x + self.dropout(attended)
        context, weights = self.cross_attention.attend(
            self.cross_norm(x), memory
        )  # (B,T,Dc), (B,T,N)
        x = x + self.dropout(self.cross_out(context))
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, weights, new_cache


class TransformerDecoderBase(nn.Module):
    """The two modes of a Transformer-style decoder, shared by :class:`TransformerDecoder` and
    the meshed decoder of M² (``captioning.models.meshed``): word embeddings scaled by sqrt(d)
    plus sinusoidal or learned positions, a stack of layers run over a whole caption
    (``forward``) or one word at a time with a key/value cache (``step``), and the word
    classifier, optionally tied to the embedding.

    A subclass calls ``__init__``, then sets ``self.layers`` (each ``layer(x (B, T, D), memory,
    cache | None) -> (x, weights (B, T, N), (keys, values))``, with a ``self_attention`` that
    has ``heads`` and ``head_dim``) and ``self.norm`` (applied before the classifier), then
    calls ``build_classifier`` (registered last, where ``TransformerDecoder`` always had it:
    the parameter order optimiser states were saved in), and writes ``layer_memory``.

    Args:
        vocab_size / d_model / dropout / positions / max_len / pad_id: see
            :class:`TransformerDecoder`.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        dropout: float,
        positions: str,
        max_len: int,
        pad_id: int,
    ) -> None:
        super().__init__()
        if positions not in ("sinusoidal", "learned"):
            raise ValueError(f"decoder.positions must be sinusoidal or learned, got {positions!r}")
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        # std d^-0.5: scaled by sqrt(d) on input it is unit-sized, and as the tied output
        # layer it gives logits of order 1 rather than sqrt(d)
        nn.init.normal_(self.embedding.weight, std=d_model**-0.5)
        with torch.no_grad():
            self.embedding.weight[pad_id].zero_()
        if positions == "learned":
            self.positions = nn.Parameter(torch.zeros(max_len, d_model))
            nn.init.normal_(self.positions, std=0.02)
        else:
            self.register_buffer(
                "positions", sinusoidal_positions(max_len, d_model), persistent=False
            )
        self.scale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout)
        self.max_len = max_len

    def build_classifier(self, tie_embeddings: bool) -> None:
        """The word classifier ``self.classifier`` (d_model -> V)."""
        vocab_size, d_model = self.embedding.weight.shape
        self.classifier = nn.Linear(d_model, vocab_size)
        if tie_embeddings:
            self.classifier.weight = self.embedding.weight

    def _embed(self, tokens: torch.Tensor, start: int | torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if isinstance(start, int):
            if start + length > self.max_len:
                raise ValueError(
                    f"caption of {start + length} steps exceeds decoder.max_len={self.max_len}"
                )
            positions = self.positions[start : start + length].unsqueeze(0)  # (1, T, D)
        else:  # per-row step counters (decoding)
            positions = self.positions[start.clamp(max=self.max_len - 1)].unsqueeze(1)  # (B, 1, D)
        return self.dropout(self.embedding(tokens) * self.scale + positions)

    def layer_memory(
        self, layer: nn.Module, regions: torch.Tensor, mask: torch.Tensor | None
    ) -> State | list[State]:
        """What ``layer`` cross-attends to, prepared once per image (kept in ``memory``)."""
        raise NotImplementedError

    def forward(
        self, regions: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._embed(tokens, 0)  # (B, T, D)
        weights = None
        for layer in self.layers:
            x, weights, _ = layer(x, self.layer_memory(layer, regions, mask))
        return self.classifier(self.norm(x)), weights  # (B, T, V), (B, T, N)

    def init_state(self, regions: torch.Tensor, mask: torch.Tensor | None = None) -> State:
        batch = regions.shape[0]
        empty = regions.new_zeros(
            batch, self.layers[0].self_attention.heads, 0, self.layers[0].self_attention.head_dim
        )
        return State(
            step=torch.zeros(batch, dtype=torch.long, device=regions.device),
            memory=[self.layer_memory(layer, regions, mask) for layer in self.layers],
            keys=[empty for _ in self.layers],
            values=[empty for _ in self.layers],
        )

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor, State]:
        x = self._embed(tokens.unsqueeze(1), state["step"])  # (B, 1, D)
        keys, values = [], []
        weights = None
        for i, layer in enumerate(self.layers):
            x, weights, (k, v) = layer(
                x, state["memory"][i], (state["keys"][i], state["values"][i])
            )
            keys.append(k)
            values.append(v)
        logprobs = self.classifier(self.norm(x[:, 0])).log_softmax(dim=-1)  # (B, V)
        new_state = State(step=state["step"] + 1, memory=state["memory"], keys=keys, values=values)
        return logprobs, weights[:, 0], new_state


class TransformerDecoder(TransformerDecoderBase):
    """A captioning Transformer decoder over the two-mode contract.

    Args:
        vocab_size: output vocabulary size.
        encoder_dim: width of the regions.
        attention: ``attention(query_dim=, region_dim=)`` for each layer's cross-attention.
        d_model / heads / layers / ffn_dim / dropout: the usual Transformer sizes.
        positions: ``sinusoidal`` or ``learned``.
        max_len: longest caption (positions table size).
        tie_embeddings: share the input embedding with the output classifier.
        pad_id: id of ``<pad>``.

    The attention weights reported are the last layer's cross-attention maps.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder_dim: int,
        attention: Callable[..., nn.Module],
        d_model: int = 256,
        heads: int = 4,
        layers: int = 2,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        positions: str = "sinusoidal",
        max_len: int = 64,
        tie_embeddings: bool = True,
        pad_id: int = 0,
    ) -> None:
        super().__init__(vocab_size, d_model, dropout, positions, max_len, pad_id)
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, heads, ffn_dim, dropout, encoder_dim, attention)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.build_classifier(tie_embeddings)

    def layer_memory(
        self, layer: nn.Module, regions: torch.Tensor, mask: torch.Tensor | None
    ) -> State:
        return State(prepare_masked(layer.cross_attention, regions, mask))
