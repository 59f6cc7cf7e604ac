"""Attention on Attention (Huang et al. 2019, "Attention on Attention for Image Captioning"):
the AoA gate, the AoA refiner and the AoA decoder of AoANet."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from captioning.models.attention import masked_mean, prepare_masked
from captioning.models.refiners import RegionSelfAttention, StackedRefiner, input_projection
from captioning.models.state import State, per_row, start_state


class AoAGate(nn.Module):
    """The AoA gate over an attended vector ``f`` and the query ``q`` that asked for it:
    information ``i = W_i [f; q] + b_i``, attention gate ``g = sigmoid(W_g [f; q] + b_g)``,
    output ``g * i`` (one linear layer to 2 x ``out_dim`` and a GLU, as AoANet writes it).

    Args:
        attended_dim / query_dim: widths of ``f`` and ``q``.
        out_dim: width of the output.
        dropout: dropout on ``[f; q]`` (training only; AoANet's refiner uses 0.3).
    """

    def __init__(
        self, attended_dim: int, query_dim: int, out_dim: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(attended_dim + query_dim, 2 * out_dim)  # [W_i; W_g]
        self.dropout = nn.Dropout(dropout)

    def forward(self, attended: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        both = self.dropout(torch.cat([attended, query], dim=-1))  # (..., Df + Dq)
        return F.glu(self.linear(both), dim=-1)  # (..., out_dim): i * sigmoid(g)


class AoARefinerLayer(nn.Module):
    """``A' = LayerNorm(A + AoA(MultiHead(A, A, A), A))`` (Huang et al. 2019): the heads'
    concatenated output goes through the AoA gate in place of an output projection."""

    def __init__(self, dim: int, heads: int, dropout: float, aoa_dropout: float) -> None:
        super().__init__()
        self.self_attention = RegionSelfAttention(dim, heads, dropout, project_out=False)
        self.gate = AoAGate(dim, dim, dim, aoa_dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        attended = self.self_attention(x, keep)  # (B, N, D)
        return self.norm(x + self.dropout(self.gate(attended, x)))


class AoARefiner(StackedRefiner):
    """``refiner=aoa``: AoANet's refining encoder, a stack of :class:`AoARefinerLayer`.

    The regions are first embedded to ``d_model`` (linear + ReLU + dropout, AoANet's feature
    embedding) when the widths differ. Post-norm, as the paper's equation; the authors' code
    normalises before each layer and once at the end instead. No feed-forward layer (the
    paper has none; the code's ``use_ff`` is off in its AoANet config).

    Args:
        region_dim: width of the regions (the encoder's ``out_dim``).
        layers: AoA layers (the paper's 6).
        d_model / heads: width (the paper's 1024) and heads (8).
        dropout: on the attention probabilities and the residual branch.
        aoa_dropout: on the AoA gate's input (0.3 in AoANet).
        levels: return the last ``levels`` layers' outputs concatenated (1: the last layer).
    """

    def __init__(
        self,
        region_dim: int,
        layers: int = 2,
        d_model: int = 128,
        heads: int = 4,
        dropout: float = 0.1,
        aoa_dropout: float = 0.3,
        levels: int = 1,
    ) -> None:
        super().__init__(
            d_model,
            [AoARefinerLayer(d_model, heads, dropout, aoa_dropout) for _ in range(layers)],
            levels,
            input_projection(region_dim, d_model, relu=True, dropout=dropout),
        )


class AoADecoder(nn.Module):
    """AoANet's decoder (Huang et al. 2019).

    An LSTM reads ``[W_e x_t; a_mean + c_{t-1}]`` (the word embedding, the mean of the real
    regions plus the previous context vector); its hidden state ``h_t`` attends over the
    (refined) regions through ``attention``, and the attended vector with ``h_t`` goes through
    the AoA gate to give the context vector ``c_t``, which the word classifier reads after
    dropout. The state starts at zeros (``c_0`` too). The weights reported are the
    attention module's.

    Where it departs from the paper: the attention is any ``conf/attention`` module (the paper:
    multi-head, ``attention=multihead``, without AoANet's LayerNorm on the query); the mean
    region is projected to ``hidden_dim`` when the widths differ (AoANet's are equal); the word
    embedding is a plain lookup (AoANet's adds ReLU and dropout).

    Args:
        vocab_size: output vocabulary size.
        encoder_dim: width of the regions.
        attention: ``attention(query_dim=, region_dim=) -> attention module`` (a Hydra partial).
        embed_dim: word embedding width.
        hidden_dim: width of the LSTM and of the context vector (the paper's 1024).
        dropout: dropout on ``c_{t-1}`` in the LSTM's input and on ``c_t`` before the classifier.
        pad_id: id of ``<pad>`` (its embedding stays zero).
    """

    def __init__(
        self,
        vocab_size: int,
        encoder_dim: int,
        attention: Callable[..., nn.Module],
        embed_dim: int = 128,
        hidden_dim: int = 256,
        dropout: float = 0.2,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.attention = attention(query_dim=hidden_dim, region_dim=encoder_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.mean_projection = input_projection(encoder_dim, hidden_dim)
        self.lstm = nn.LSTMCell(embed_dim + hidden_dim, hidden_dim)
        self.gate = AoAGate(self.attention.out_dim, hidden_dim, hidden_dim)
        self.context_dropout = nn.Dropout(dropout)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_dim, vocab_size)
        self.hidden_dim = hidden_dim

    def init_state(self, regions: torch.Tensor, mask: torch.Tensor | None = None) -> State:
        zeros = regions.new_zeros(regions.shape[0], self.hidden_dim)  # (B, H)
        return State(
            h=zeros,
            c=zeros,
            context=zeros,
            memory=State(
                attention=State(prepare_masked(self.attention, regions, mask)),
                mean=self.mean_projection(masked_mean(regions, mask)),  # (B, H)
            ),
        )

    def _advance(
        self, embedded: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One word on: the context vector c_t (B, H), weights (B, N), state."""
        memory = state["memory"]
        mean = per_row(memory["mean"], embedded.shape[0])  # (B, H): k rows per image in a beam
        visual = mean + self.context_dropout(state["context"])
        h, c = self.lstm(torch.cat([embedded, visual], dim=-1), (state["h"], state["c"]))
        attended, weights = self.attention.attend(h.unsqueeze(1), memory["attention"])
        context = self.gate(attended.squeeze(1), h)  # (B, H)
        return context, weights.squeeze(1), State(h=h, c=c, context=context, memory=memory)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor, State]:
        context, weights, state = self._advance(self.embedding(tokens), state)
        logprobs = self.classifier(self.dropout(context)).log_softmax(dim=-1)  # (B, V)
        return logprobs, weights, state

    def forward(
        self, regions: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        state = start_state(self, regions, mask)
        embedded = self.embedding(tokens)  # (B, T, E)
        contexts, weights = [], []
        for t in range(tokens.shape[1]):
            context, step_weights, state = self._advance(embedded[:, t], state)
            contexts.append(context)
            weights.append(step_weights)
        logits = self.classifier(self.dropout(torch.stack(contexts, dim=1)))  # (B, T, V)
        return logits, torch.stack(weights, dim=1)  # (B, T, V), (B, T, N)
