"""The Up-Down decoder (Anderson et al. 2018, "Bottom-Up and Top-Down Attention for Image
Captioning and Visual Question Answering"): a top-down attention LSTM and a language LSTM."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from captioning.models.attention import masked_mean, prepare_masked
from captioning.models.state import State, per_row, start_state


class UpDownDecoder(nn.Module):
    """Two LSTM layers per word (Anderson et al. 2018).

    The attention LSTM reads ``[h2_{t-1}; v_mean; W_e x_t]`` (the language LSTM's previous
    hidden state, the mean of the real regions, the previous word's embedding); its hidden
    state ``h1_t`` queries ``attention`` over the regions; the language LSTM reads
    ``[context_t; h1_t]`` and the word classifier its hidden state ``h2_t`` (after dropout).
    Both LSTMs start from zeros. The weights reported are the attention's.

    Where it departs from the paper: the attention is any ``conf/attention`` module (the paper's
    is additive, ``attention=additive``); the paper does not say where it drops out, and
    the dropout sits before the classifier, as in ruotianluo/ImageCaptioning.pytorch.

    Args:
        vocab_size: output vocabulary size.
        encoder_dim: width of the regions.
        attention: ``attention(query_dim=, region_dim=) -> attention module`` (a Hydra partial).
        embed_dim: word embedding width.
        hidden_dim: width of both LSTMs (the paper's 1000).
        dropout: dropout on the language LSTM's output before the word classifier.
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
        self.attention_lstm = nn.LSTMCell(hidden_dim + encoder_dim + embed_dim, hidden_dim)
        self.language_lstm = nn.LSTMCell(self.attention.out_dim + hidden_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_dim, vocab_size)
        self.hidden_dim = hidden_dim

    def init_state(self, regions: torch.Tensor, mask: torch.Tensor | None = None) -> State:
        zeros = regions.new_zeros(regions.shape[0], self.hidden_dim)  # (B, H)
        return State(
            attention_h=zeros,
            attention_c=zeros,
            language_h=zeros,
            language_c=zeros,
            memory=State(
                attention=State(prepare_masked(self.attention, regions, mask)),
                mean=masked_mean(regions, mask),  # (B, De)
            ),
        )

    def _advance(
        self, embedded: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """Both LSTMs one word on: the language LSTM's hidden (B, H), weights (B, N), state."""
        memory = state["memory"]
        mean = per_row(memory["mean"], embedded.shape[0])  # (B, De): k rows per image in a beam
        inputs = torch.cat([state["language_h"], mean, embedded], dim=-1)
        attention_h, attention_c = self.attention_lstm(
            inputs, (state["attention_h"], state["attention_c"])
        )  # (B, H) each
        context, weights = self.attention.attend(attention_h.unsqueeze(1), memory["attention"])
        context, weights = context.squeeze(1), weights.squeeze(1)  # (B, Dc), (B, N)
        language_h, language_c = self.language_lstm(
            torch.cat([context, attention_h], dim=-1), (state["language_h"], state["language_c"])
        )
        new_state = State(
            attention_h=attention_h,
            attention_c=attention_c,
            language_h=language_h,
            language_c=language_c,
            memory=memory,
        )
        return language_h, weights, new_state

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor, State]:
        hidden, weights, state = self._advance(self.embedding(tokens), state)
        logprobs = self.classifier(self.dropout(hidden)).log_softmax(dim=-1)  # (B, V)
        return logprobs, weights, state

    def forward(
        self, regions: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        state = start_state(self, regions, mask)
        embedded = self.embedding(tokens)  # (B, T, E)
        hiddens, weights = [], []
        for t in range(tokens.shape[1]):
            hidden, step_weights, state = self._advance(embedded[:, t], state)
            hiddens.append(hidden)
            weights.append(step_weights)
        logits = self.classifier(self.dropout(torch.stack(hiddens, dim=1)))  # (B, T, V)
        return logits, torch.stack(weights, dim=1)  # (B, T, V), (B, T, N)
