"""Attention: ``forward(query (B,T,Dq), regions (B,N,De)) -> (context (B,T,Dc), weights (B,T,N))``.

Weights are a softmax over the N regions. ``prepare(regions)`` computes the query-independent
part once per image, and ``attend(query, memory)`` reuses it at every decoding step.
"""

from __future__ import annotations

import torch
from torch import nn


class AdditiveAttention(nn.Module):
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
        return {"keys": self.region_proj(regions), "values": regions}  # (B, N, A), (B, N, De)

    def attend(
        self, query: torch.Tensor, memory: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.tanh(memory["keys"].unsqueeze(1) + self.query_proj(query).unsqueeze(2))
        scores = self.score(hidden).squeeze(-1)  # (B, T, N)
        weights = scores.softmax(dim=-1)  # (B, T, N)
        context = weights @ memory["values"]  # (B, T, De)
        return context, weights

    def forward(
        self, query: torch.Tensor, regions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attend(query, self.prepare(regions))
