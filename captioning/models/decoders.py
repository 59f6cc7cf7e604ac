"""Decoders over the two-mode contract.

- teacher forcing: ``forward(regions (B,N,De), tokens (B,T), mask (B,N) | None) -> (logits
  (B,T,V), weights (B,T,N))``
- incremental: ``init_state(regions, mask (B,N) | None) -> State``;
  ``step(tokens (B,), state) -> (logprobs (B,V), weights (B,N), State)``

The mask (True for a real region) marks the padding of region sets of different sizes: padded
regions get exactly zero attention and take no part in any mean.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from captioning.models.attention import masked_mean, prepare_masked
from captioning.models.state import State, start_state


class LSTMDecoder(nn.Module):
    """Show, Attend and Tell (Xu et al. 2015): an LSTM that attends to the regions each step.

    Args:
        vocab_size: output vocabulary size.
        encoder_dim: width of the regions.
        attention: ``attention(query_dim=, region_dim=) -> attention module`` (a Hydra partial).
        embed_dim: word embedding width.
        hidden_dim: LSTM width.
        dropout: dropout on the LSTM output before the word classifier.
        gate: the gating scalar beta = sigmoid(f_beta(h)) that scales the context.
        pad_id: id of ``<pad>`` (its embedding stays zero).
        cell: ``lstm`` or ``gru``.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder_dim: int,
        attention: Callable[..., nn.Module],
        embed_dim: int = 128,
        hidden_dim: int = 256,
        dropout: float = 0.2,
        gate: bool = True,
        pad_id: int = 0,
        cell: str = "lstm",
    ) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"decoder.cell must be lstm or gru, got {cell!r}")
        self.attention = attention(query_dim=hidden_dim, region_dim=encoder_dim)
        context_dim = self.attention.out_dim
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.init_h = nn.Linear(encoder_dim, hidden_dim)
        self.init_c = nn.Linear(encoder_dim, hidden_dim) if cell == "lstm" else None
        self.gate = nn.Linear(hidden_dim, context_dim) if gate else None
        cell_type = nn.LSTMCell if cell == "lstm" else nn.GRUCell
        self.cell = cell_type(embed_dim + context_dim, hidden_dim)
        self.is_lstm = cell == "lstm"
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_dim, vocab_size)
        self.vocab_size = vocab_size

    def init_state(self, regions: torch.Tensor, mask: torch.Tensor | None = None) -> State:
        mean = masked_mean(regions, mask)  # (B, De)
        state = State(
            h=torch.tanh(self.init_h(mean)),
            memory=State(prepare_masked(self.attention, regions, mask)),
        )
        if self.is_lstm:
            state["c"] = torch.tanh(self.init_c(mean))  # (B, H)
        return state

    def _advance(
        self, embedded: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One LSTM step from an embedded word: new hidden (B,H), weights (B,N), state."""
        context, weights = self.attention.attend(state["h"].unsqueeze(1), state["memory"])
        context, weights = context.squeeze(1), weights.squeeze(1)  # (B, Dc), (B, N)
        if self.gate is not None:
            context = torch.sigmoid(self.gate(state["h"])) * context
        inputs = torch.cat([embedded, context], dim=-1)
        if self.is_lstm:
            h, c = self.cell(inputs, (state["h"], state["c"]))
            return h, weights, State(h=h, c=c, memory=state["memory"])
        h = self.cell(inputs, state["h"])
        return h, weights, State(h=h, memory=state["memory"])

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor, State]:
        h, weights, state = self._advance(self.embedding(tokens), state)
        logprobs = self.classifier(self.dropout(h)).log_softmax(dim=-1)  # (B, V)
        return logprobs, weights, state

    def forward(
        self, regions: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        state = start_state(self, regions, mask)  # a subclass may take no mask
        embedded = self.embedding(tokens)  # (B, T, E)
        hiddens, weights = [], []
        for t in range(tokens.shape[1]):
            h, w, state = self._advance(embedded[:, t], state)
            hiddens.append(h)
            weights.append(w)
        # the classifier runs once over all steps: one big matmul instead of T small ones
        logits = self.classifier(self.dropout(torch.stack(hiddens, dim=1)))  # (B, T, V)
        return logits, torch.stack(weights, dim=1)  # (B, T, V), (B, T, N)
