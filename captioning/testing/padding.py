"""The padding check: region sets of different sizes padded into one batch give each image
exactly what it gets alone (captions, scores, attention), the padding getting zero weight."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from captioning.decoding import beam_search, greedy_decode
from captioning.models.state import decode_masked, start_state
from captioning.testing._common import (
    assert_scaled_close,
    check_distribution,
    evaluating,
    expect_shape,
    fail_unless,
    seeded_generator,
)


def pad_regions(
    sets: Sequence[torch.Tensor], fill: float | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region sets (N_i, D) -> a padded batch (B, max N_i, D) and its mask (B, max N_i).

    The padding holds ``fill`` or, by default, large random values: what sits in the padding
    must not matter, so a check should not hide a leak behind zeros.
    """
    longest = max(int(s.shape[0]) for s in sets)
    width = int(sets[0].shape[-1])
    generator = seeded_generator(seed)
    padded = 100.0 * torch.randn(len(sets), longest, width, generator=generator)
    if fill is not None:
        padded.fill_(fill)
    padded = padded.to(sets[0].device, sets[0].dtype)
    mask = torch.zeros(len(sets), longest, dtype=torch.bool, device=sets[0].device)
    for row, regions in enumerate(sets):
        padded[row, : len(regions)] = regions
        mask[row, : len(regions)] = True
    return padded, mask


@torch.no_grad()
def check_padding(
    decoder: nn.Module,
    sets: Sequence[torch.Tensor],
    tokens: torch.Tensor | None = None,
    *,
    refiner: nn.Module | None = None,
    beam_sizes: Sequence[int] = (1, 3),
    max_len: int = 8,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    rtol: float = 1e-5,
    seed: int = 0,
) -> None:
    """Padding changes nothing: a decoder (after an optional refiner) on a padded batch of
    region sets against each set alone, in eval mode.

    Args:
        decoder: the decoder, built for the sets' width (the refiner's ``out_dim`` if given).
        sets: B region sets (N_i, D) of different sizes N_i >= 1.
        tokens: (B, T) words to teacher-force; default: 6 random ids in 3..V-1.
        refiner: a refiner (``refiner(regions, mask)``) run first, e.g. ``refiner=memory``.

    Checks: the refiner's outputs on each image's real regions equal its outputs alone;
    teacher-forced logits equal, attention equal on the real regions and exactly 0 on the
    padding; ``init_state(regions, mask)`` then ``step`` equal to teacher forcing; beam
    search (each of ``beam_sizes``) and greedy decoding give each image the words, scores
    and attention it gets alone.
    """
    name = type(decoder).__name__
    fail_unless(len(sets) >= 2, "check_padding needs at least two region sets")
    sizes = [int(s.shape[0]) for s in sets]
    fail_unless(min(sizes) >= 1, f"every region set needs a region, got sizes {sizes}")
    fail_unless(len(set(sizes)) > 1, f"the region sets should differ in size, got {sizes}")
    padded, mask = pad_regions(sets, seed=seed)
    with evaluating(decoder), evaluating(refiner or decoder):
        alone = [s.unsqueeze(0) for s in sets]
        if refiner is not None:
            refined = refiner(padded, mask)
            alone = [refiner(regions, None) for regions in alone]
            for row, regions in enumerate(alone):
                assert_scaled_close(
                    refined[row, : sizes[row]], regions[0], rtol,
                    f"{type(refiner).__name__}: image {row}'s refined regions, padded vs alone",
                )  # fmt: skip
            padded = refined
        vocab = int(start_state_logprobs(decoder, padded, mask, bos_id).shape[-1])
        if tokens is None:
            tokens = torch.randint(3, vocab, (len(sets), 6), generator=seeded_generator(seed))
        tokens = tokens.to(padded.device)
        logits, weights = decode_masked(decoder, padded, tokens, mask)
        expect_shape(weights, (len(sets), tokens.shape[1], padded.shape[1]), f"{name} weights")
        check_distribution(weights, f"{name} teacher-forced weights on padded regions", mask)
        _check_masked_steps(decoder, name, padded, mask, tokens, logits, weights, rtol)
        for row, regions in enumerate(alone):
            own_logits, own_weights = decoder(regions, tokens[row : row + 1])
            what = f"{name}: image {row} ({sizes[row]} of {padded.shape[1]} regions)"
            assert_scaled_close(
                logits[row], own_logits[0], rtol, f"{what}: logits, padded vs alone"
            )
            assert_scaled_close(
                weights[row, :, : sizes[row]], own_weights[0], rtol,
                f"{what}: attention, padded vs alone",
            )  # fmt: skip
        ids = {"bos_id": bos_id, "eos_id": eos_id, "pad_id": pad_id}
        for k in beam_sizes:
            out = beam_search(decoder, padded, beam_size=k, max_len=max_len, mask=mask, **ids)
            for row, regions in enumerate(alone):
                own = beam_search(decoder, regions, beam_size=k, max_len=max_len, **ids)
                what = f"{name}, beam_size={k}: image {row}"
                length = own.tokens.shape[-1]  # the batch searched as long as its longest
                fail_unless(
                    torch.equal(out.tokens[row, 0, :length], own.tokens[0, 0])
                    and not bool((out.tokens[row, 0, length:] != pad_id).any()),
                    f"{what}: padded gave {out.tokens[row, 0].tolist()}, alone "
                    f"{own.tokens[0, 0].tolist()}",
                )
                assert_scaled_close(out.scores[row], own.scores[0], rtol, f"{what}: scores")
                assert_scaled_close(
                    out.weights[row, 0, :length, : sizes[row]], own.weights[0, 0], rtol,
                    f"{what}: attention",
                )  # fmt: skip
                fail_unless(
                    not bool(out.weights[row, :, :, sizes[row] :].any()),
                    f"{what}: the padded regions got attention",
                )
        greedy_tokens, greedy_weights = greedy_decode(
            decoder, padded, max_len=max_len, mask=mask, **ids
        )
        for row, regions in enumerate(alone):
            own_tokens, own_weights = greedy_decode(decoder, regions, max_len=max_len, **ids)
            length = own_tokens.shape[1]
            fail_unless(
                torch.equal(greedy_tokens[row, :length], own_tokens[0])
                and not bool((greedy_tokens[row, length:] != pad_id).any()),
                f"{name}: greedy decoding of image {row}, padded "
                f"{greedy_tokens[row].tolist()} vs alone {own_tokens[0].tolist()}",
            )
            assert_scaled_close(
                greedy_weights[row, :length, : sizes[row]], own_weights[0], rtol,
                f"{name}: greedy attention of image {row}, padded vs alone",
            )  # fmt: skip


def start_state_logprobs(
    decoder: nn.Module, regions: torch.Tensor, mask: torch.Tensor, bos_id: int
) -> torch.Tensor:
    """The first step's log-probabilities (B, V) from ``<bos>``."""
    first = torch.full((len(regions),), bos_id, dtype=torch.long, device=regions.device)
    logprobs, _, _ = decoder.step(first, start_state(decoder, regions, mask))
    return logprobs


def _check_masked_steps(
    decoder: nn.Module,
    name: str,
    regions: torch.Tensor,
    mask: torch.Tensor,
    tokens: torch.Tensor,
    logits: torch.Tensor,
    weights: torch.Tensor,
    rtol: float,
) -> None:
    """``init_state(regions, mask)`` then ``step`` equal to masked teacher forcing."""
    expected = logits.log_softmax(-1)
    state = start_state(decoder, regions, mask)
    for t in range(tokens.shape[1]):
        logprobs, step_weights, state = decoder.step(tokens[:, t], state)
        assert_scaled_close(
            logprobs, expected[:, t], rtol,
            f"{name}: masked step log-probabilities vs teacher forcing at position {t}",
        )  # fmt: skip
        assert_scaled_close(
            step_weights, weights[:, t], rtol,
            f"{name}: masked step weights vs teacher forcing at position {t}",
        )  # fmt: skip
