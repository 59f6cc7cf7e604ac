"""Decoding over the decoder's incremental contract (``init_state`` / ``step``) only."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def greedy_decode(
    decoder: nn.Module,
    regions: torch.Tensor,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_len: int = 30,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely word at each step.

    Returns:
        tokens (B, L): generated ids after ``<bos>``, ``<eos>`` included, ``<pad>`` after it.
        weights (B, L, N): the attention weights of the step that emitted each token.
    """
    batch = regions.shape[0]
    state = decoder.init_state(regions)
    previous = torch.full((batch,), bos_id, dtype=torch.long, device=regions.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=regions.device)
    tokens, weights = [], []
    for _ in range(max_len):
        logprobs, step_weights, state = decoder.step(previous, state)
        choice = logprobs.argmax(dim=-1)  # (B,)
        choice = torch.where(finished, torch.full_like(choice, pad_id), choice)
        tokens.append(choice)
        weights.append(step_weights)
        finished = finished | (choice == eos_id)
        previous = choice
        if bool(finished.all()):
            break
    return torch.stack(tokens, dim=1), torch.stack(weights, dim=1)
