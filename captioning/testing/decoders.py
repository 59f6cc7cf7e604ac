"""The decoder check: teacher forcing equal to ``step`` at every position, a state whose rows
``index_select`` can move."""

from __future__ import annotations

import torch
from torch import nn

from captioning.testing._common import (
    assert_scaled_close,
    check_distribution,
    evaluating,
    expect_shape,
    fail_unless,
    seeded_generator,
)


def _vocab_size(decoder: nn.Module, regions: torch.Tensor) -> int:
    first = torch.ones(len(regions), dtype=torch.long, device=regions.device)
    logprobs, _, _ = decoder.step(first, decoder.init_state(regions))
    return int(logprobs.shape[-1])


def _reindexing(batch: int, device: torch.device) -> torch.Tensor:
    """Rows reversed, the first repeated last: a reorder, a repeat and a drop at once."""
    index = torch.arange(batch - 1, -1, -1, device=device)
    if batch > 1:
        index[-1] = index[0]
    return index


@torch.no_grad()
def check_decoder(
    decoder: nn.Module,
    regions: torch.Tensor,
    tokens: torch.Tensor | None = None,
    *,
    steps: int = 6,
    rtol: float = 1e-5,
    seed: int = 0,
) -> None:
    """A decoder against :class:`~captioning.models.contracts.DecoderProtocol`, in eval mode.

    Args:
        decoder: the decoder (built with ``vocab_size=``, ``encoder_dim=regions.shape[-1]``).
        regions: (B, N, De) regions, e.g. from :func:`check_encoder` or ``torch.randn``.
        tokens: (B, T) word ids to teacher-force; default: ``steps`` random ids in 1..V-1.
        rtol: relative tolerance (see :func:`assert_scaled_close`).

    Checks: teacher forcing gives logits (B, T, V) and weights (B, T, N), the weights a
    distribution over the regions; ``init_state`` then ``step`` at each position t gives
    log-probabilities (B, V) equal to ``log_softmax(logits[:, t])`` and weights (B, N) equal
    to ``weights[:, t]``; half-way, ``state.index_select(index)`` moves the state's rows (the
    step on the re-indexed state equals rows ``index`` of the step on the original).
    """
    name = type(decoder).__name__
    for method in ("init_state", "step"):
        fail_unless(callable(getattr(decoder, method, None)), f"{name} has no {method}()")
    batch, regions_n = int(regions.shape[0]), int(regions.shape[1])
    with evaluating(decoder):
        vocab = _vocab_size(decoder, regions)
        if tokens is None:
            tokens = torch.randint(1, vocab, (batch, steps), generator=seeded_generator(seed))
        tokens = tokens.to(regions.device)
        length = int(tokens.shape[1])
        logits, weights = decoder(regions, tokens)
        expect_shape(logits, (batch, length, vocab), f"{name} teacher-forced logits")
        expect_shape(weights, (batch, length, regions_n), f"{name} teacher-forced weights")
        check_distribution(weights, f"{name} teacher-forced weights")
        _check_steps(decoder, name, regions, tokens, logits, weights, rtol)


def _check_steps(
    decoder: nn.Module,
    name: str,
    regions: torch.Tensor,
    tokens: torch.Tensor,
    logits: torch.Tensor,
    weights: torch.Tensor,
    rtol: float,
) -> None:
    """``init_state`` then ``step`` at each position equal to teacher forcing (``logits``,
    ``weights``); half-way, the step on a re-indexed state equal to those rows of the step."""
    (batch, length, vocab), regions_n = logits.shape, int(regions.shape[1])
    expected = logits.log_softmax(-1)  # (B, T, V)
    state = decoder.init_state(regions)
    fail_unless(
        callable(getattr(state, "index_select", None)),
        f"{name}.init_state returned a {type(state).__name__} without index_select(index): "
        "beam search re-indexes it (use captioning.models.State)",
    )
    index = _reindexing(batch, regions.device)
    for t in range(length):
        if t == length // 2:
            picked = decoder.step(tokens[index, t], state.index_select(index))
        logprobs, step_weights, state = decoder.step(tokens[:, t], state)
        expect_shape(logprobs, (batch, vocab), f"{name}.step log-probabilities at position {t}")
        expect_shape(step_weights, (batch, regions_n), f"{name}.step weights at position {t}")
        assert_scaled_close(
            logprobs, expected[:, t], rtol,
            f"{name}: step log-probabilities vs log_softmax(teacher-forced logits) at position {t}",
        )  # fmt: skip
        assert_scaled_close(
            step_weights, weights[:, t], rtol,
            f"{name}: step weights vs teacher-forced weights at position {t}",
        )  # fmt: skip
        if t == length // 2:
            what = f"{name}: step after state.index_select({index.tolist()}) at position {t}"
            assert_scaled_close(picked[0], logprobs[index], rtol, f"{what}, log-probabilities")
            assert_scaled_close(picked[1], step_weights[index], rtol, f"{what}, weights")
