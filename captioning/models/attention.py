"""Attention: ``forward(query (B,T,Dq), regions (B,N,De), mask (B,N) | None) -> (context
(B,T,Dc), weights (B,T,N))``.

Weights are a softmax over the N regions; where a mask is given (True for a real region), the
padded regions get exactly 0. ``prepare(regions)`` computes the query-independent part once per
image, and ``attend(query, memory)`` reuses it at every decoding step; the mask travels in the
memory as ``memory["mask"]`` (:func:`prepare_masked`). A new module subclasses ``Attention`` and
writes ``prepare`` and ``_attend`` (one query row per memory row, honouring ``memory["mask"]``
when present); the base ``attend`` also serves several hypotheses per image (beam search).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """The contract every attention module honours; subclasses give ``prepare`` and ``_attend``.

    ``out_dim`` is the width of the context it returns.
    """

    out_dim: int

    def prepare(self, regions: torch.Tensor) -> dict[str, torch.Tensor]:
        """The query-independent part, computed once per image (kept in the decoder state)."""
        raise NotImplementedError

    def attend(
        self, query: torch.Tensor, memory: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context and weights for every query row against the prepared ``memory``.

        ``query`` may hold g rows per memory row, image-major (row ``b * g + j`` is hypothesis
        j of image b): beam search keeps one copy of an image's memory for its k hypotheses,
        which then attend as g * T queries of one image instead of g copies of it. Every
        tensor of ``memory`` is batch-first (one row per image).
        """
        rows = next(iter(memory.values())).shape[0]
        batch, steps, width = query.shape
        if batch == rows:
            return self._attend(query, memory)
        if batch % rows:
            raise ValueError(f"{batch} query rows do not group over {rows} memory rows")
        context, weights = self._attend(query.reshape(rows, -1, width), memory)  # (rows, g*T, .)
        return context.reshape(batch, steps, -1), weights.reshape(batch, steps, -1)

    def _attend(
        self, query: torch.Tensor, memory: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``attend`` for one query row per memory row: (B, T, Dq) -> (B, T, Dc), (B, T, N)."""
        raise NotImplementedError

    def forward(
        self, query: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attend(query, prepare_masked(self, regions, mask))


def prepare_masked(
    attention: nn.Module, regions: torch.Tensor, mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """``attention.prepare(regions)`` with the region mask (B, N) kept as ``memory["mask"]``.

    The mask rides in the memory, so everything that carries a decoder state (beam search,
    sampling, re-indexing) carries it too, one row per image.
    """
    memory = dict(attention.prepare(regions))
    if mask is not None:
        memory["mask"] = mask.to(device=regions.device, dtype=torch.bool)
    return memory


def mask_scores(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Scores (B, T, N) with the padded regions (``mask`` (B, N) False) at -inf."""
    if mask is None:
        return scores
    return scores.masked_fill(~mask.unsqueeze(1), float("-inf"))


def masked_mean(regions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The mean region (B, De) over the real regions only."""
    if mask is None:
        return regions.mean(dim=1)
    weights = mask.to(regions.dtype).unsqueeze(-1)  # (B, N, 1)
    return (regions * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def mix(
    scores: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax scores (B, T, N) over the (real) regions; the context is the weighted sum of
    values. Padded regions (``mask`` (B, N) False) get exactly 0."""
    weights = mask_scores(scores, mask).softmax(dim=-1)  # (B, T, N)
    return weights @ values, weights  # (B, T, De), (B, T, N)


def additive_scores(
    doubled_keys: torch.Tensor, doubled_query: torch.Tensor, score: nn.Linear
) -> torch.Tensor:
    """``score(tanh(k + q))`` from ``2k`` and ``2q``: (B, T|1, N, A), (B, T, 1, A) -> (B, T, N).

    In float32 on a CPU it is computed as ``(2w) . sigmoid(2k + 2q) + b - sum(w)``, the same
    function (tanh z = 2 sigmoid(2z) - 1, folded into the score layer), because PyTorch's CPU
    tanh kernel is several times slower than its sigmoid (3.4 vs 0.5 ms for the 2.6M
    elements of one beam-search step here) and this (B, T, N, A) tensor is the largest one of
    a decoding step. Elsewhere (GPUs, half precision, where sigmoid near 1/2 would lose the
    precision tanh keeps near 0) it is the tanh itself. In place either way: one temporary
    fewer (both backward passes need only their output).
    """
    hidden = doubled_keys + doubled_query  # (B, T, N, A)
    if hidden.device.type == "cpu" and hidden.dtype == torch.float32:
        torch.sigmoid_(hidden)
        weight, bias = score.weight, score.bias  # (1, A), (1,)
        return F.linear(hidden, 2.0 * weight, bias - weight.sum()).squeeze(-1)
    return score(torch.tanh_(hidden.mul_(0.5))).squeeze(-1)


class AdditiveAttention(Attention):
    """Bahdanau / Show-Attend-Tell: ``w^T tanh(W_r r + W_q q)``.

    Args:
        query_dim: width of the decoder state that asks.
        region_dim: width of the encoder regions.
        attention_dim: width of the hidden scoring layer.
    """

    def __init__(self, query_dim: int, region_dim: int, attention_dim: int = 128) -> None:
        super().__init__()
        self.region_proj = nn.Linear(region_dim, attention_dim)
        self.query_proj = nn.Linear(query_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)
        self.out_dim = region_dim

    def prepare(self, regions: torch.Tensor) -> dict[str, torch.Tensor]:
        # (B, N, A), (B, N, De); keys doubled once per image for `additive_scores`
        return {"doubled_keys": 2.0 * self.region_proj(regions), "values": regions}

    def _attend(
        self, query: torch.Tensor, memory: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        doubled_query = 2.0 * self.query_proj(query).unsqueeze(2)  # (B, T, 1, A)
        scores = additive_scores(memory["doubled_keys"].unsqueeze(1), doubled_query, self.score)
        return mix(scores, memory["values"], memory.get("mask"))  # scores (B, T, N)


class DotAttention(Attention):
    """Luong dot-product attention: ``q . r`` (the query is linearly mapped to the region
    width when the widths differ), optionally scaled by ``1/sqrt(D)``.

    Args:
        query_dim / region_dim: widths of the decoder query and of the regions.
        scaled: divide scores by sqrt(region_dim) (``scaled_dot``).
    """

    def __init__(self, query_dim: int, region_dim: int, scaled: bool = False) -> None:
        super().__init__()
        self.query_proj = (
            nn.Identity()
            if query_dim == region_dim
            else nn.Linear(query_dim, region_dim, bias=False)
        )
        self.scale = region_dim**-0.5 if scaled else 1.0
        self.out_dim = region_dim

    def prepare(self, regions: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"keys": regions, "values": regions}

    def _attend(
        self, query: torch.Tensor, memory: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = (self.query_proj(query) @ memory["keys"].transpose(1, 2)) * self.scale  # (B, T, N)
        return mix(scores, memory["values"], memory.get("mask"))


class BilinearAttention(Attention):
    """Projected scaled dot product: image and text each get their own projection to an
    attention width, ``softmax((W_q q)(W_k r)^T / sqrt(A))``; the context is the regions' mix.

    Args:
        query_dim / region_dim: widths of the decoder query and of the regions.
        attention_dim: the shared width both sides are projected to.
    """

    def __init__(self, query_dim: int, region_dim: int, attention_dim: int = 128) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_dim, attention_dim)
        self.key_proj = nn.Linear(region_dim, attention_dim)
        self.scale = attention_dim**-0.5
        self.out_dim = region_dim

    def prepare(self, regions: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"keys": self.key_proj(regions), "values": regions}  # (B, N, A), (B, N, De)

    def _attend(
        self, query: torch.Tensor, memory: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.query_proj(query) @ memory["keys"].transpose(1, 2) * self.scale  # (B, T, N)
        return mix(scores, memory["values"], memory.get("mask"))


class MultiHeadAttention(Attention):
    """Multi-head attention through ``F.scaled_dot_product_attention``.

    The context comes from the fused kernel; the returned weights are the heads' softmax
    maps averaged (for display, grounding and the attention regulariser).

    Args:
        query_dim / region_dim: widths of the decoder query and of the regions.
        attention_dim: total width of the heads (a multiple of ``heads``).
        heads: number of heads.
        dropout: dropout on the attention probabilities (training only).
    """

    def __init__(
        self,
        query_dim: int,
        region_dim: int,
        attention_dim: int = 128,
        heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if attention_dim % heads:
            raise ValueError(
                f"attention.attention_dim={attention_dim} must be a multiple of attention.heads={heads}"
            )
        self.heads = heads
        self.head_dim = attention_dim // heads
        self.query_proj = nn.Linear(query_dim, attention_dim)
        self.key_proj = nn.Linear(region_dim, attention_dim)
        self.value_proj = nn.Linear(region_dim, attention_dim)
        self.out_proj = nn.Linear(attention_dim, region_dim)
        self.dropout = dropout
        self.out_dim = region_dim

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # (B, H, L, d)

    def prepare(self, regions: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "keys": self._split(self.key_proj(regions)),
            "values": self._split(self.value_proj(regions)),
        }

    def _attend(
        self, query: torch.Tensor, memory: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q = self._split(self.query_proj(query))  # (B, H, T, d)
        dropout = self.dropout if self.training else 0.0
        mask = memory.get("mask")
        keep = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, N): True attends
        context = F.scaled_dot_product_attention(
            q, memory["keys"], memory["values"], attn_mask=keep, dropout_p=dropout
        )
        batch, _, steps, _ = context.shape
        context = self.out_proj(context.transpose(1, 2).reshape(batch, steps, -1))  # (B, T, De)
        scores = q @ memory["keys"].transpose(-1, -2) * self.head_dim**-0.5  # (B, H, T, N)
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
        weights = scores.softmax(dim=-1).mean(dim=1)  # (B, T, N)
        return context, weights


class AdaptiveAttention(Attention):
    """Adaptive attention with a visual sentinel (Lu et al. 2017, "knowing when to look").

    A sentinel vector ``s = sigmoid(W_g q) * tanh(W_s q)`` competes with the regions in one
    additive softmax over N + 1 slots; its share ``beta`` is how much the word relies on the
    language model instead of the image. The context is ``sum_n a_n r_n + beta s``. The
    returned weights are the region shares renormalised to sum to 1; ``beta`` of the last
    call is kept in ``self.sentinel`` (B, T) for logging and figures.

    Args:
        query_dim / region_dim: widths of the decoder query and of the regions.
        attention_dim: width of the hidden scoring layer.
    """

    def __init__(self, query_dim: int, region_dim: int, attention_dim: int = 128) -> None:
        super().__init__()
        self.region_proj = nn.Linear(region_dim, attention_dim)
        self.query_proj = nn.Linear(query_dim, attention_dim)
        self.sentinel_gate = nn.Linear(query_dim, region_dim)
        self.sentinel_value = nn.Linear(query_dim, region_dim)
        self.sentinel_proj = nn.Linear(region_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)
        self.out_dim = region_dim
        self.sentinel: torch.Tensor | None = None

    def prepare(self, regions: torch.Tensor) -> dict[str, torch.Tensor]:
        # keys doubled once per image for `additive_scores`
        return {"doubled_keys": 2.0 * self.region_proj(regions), "values": regions}

    def attend(
        self, query: torch.Tensor, memory: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        context, weights = super().attend(query, memory)
        self.sentinel = self.sentinel.reshape(weights.shape[:2])  # (B, T) when rows were grouped
        return context, weights

    def _attend(
        self, query: torch.Tensor, memory: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sentinel = torch.sigmoid(self.sentinel_gate(query)) * torch.tanh(
            self.sentinel_value(query)
        )  # (B, T, De)
        doubled_query = 2.0 * self.query_proj(query).unsqueeze(2)  # (B, T, 1, A)
        region_scores = mask_scores(
            additive_scores(memory["doubled_keys"].unsqueeze(1), doubled_query, self.score),
            memory.get("mask"),
        )
        sentinel_key = 2.0 * self.sentinel_proj(sentinel).unsqueeze(2)  # (B, T, 1, A)
        sentinel_score = additive_scores(sentinel_key, doubled_query, self.score)  # (B, T, 1)
        shares = torch.cat([region_scores, sentinel_score], dim=-1).softmax(dim=-1)  # (B, T, N+1)
        region_shares, beta = shares[..., :-1], shares[..., -1:]
        context = region_shares @ memory["values"] + beta * sentinel  # (B, T, De)
        self.sentinel = beta.squeeze(-1).detach()
        weights = region_shares / (1.0 - beta).clamp(min=1e-6)  # (B, T, N), rows sum to 1
        return context, weights
