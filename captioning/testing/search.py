"""The beam-search check: ``captioning.decoding.beam_search`` (batched) equal to
:func:`reference_beam_search` (one image and one hypothesis at a time), greedy decoding equal
to a beam of one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from captioning.decoding import BeamOutput, beam_search, greedy_decode, length_penalty
from captioning.testing._common import assert_scaled_close, evaluating, fail_unless


class ReferenceHypothesis(NamedTuple):
    """The best hypothesis of one image from :func:`reference_beam_search`."""

    tokens: list[int]  # after <bos>: <eos> included when reached, <pad> after it
    logprob: float  # the sum of its log-probabilities
    score: float  # logprob / length penalty: what ranks the final hypotheses
    weights: torch.Tensor  # (len(tokens), N) attention of each step


@torch.no_grad()
def reference_beam_search(
    decoder: nn.Module,
    regions: torch.Tensor,
    beam_size: int,
    max_len: int,
    *,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    block_trigrams: bool = False,
    suppress_ids: Sequence[int] = (),
    length_penalty_mode: str = "none",
    alpha: float = 0.6,
) -> list[ReferenceHypothesis]:
    """Beam search one image and one hypothesis at a time, in Python lists: the specification
    ``captioning.decoding.beam_search`` must match. It costs B x max_len x k x V Python steps:
    keep the vocabulary small (tens of words)."""
    results = []
    never = {pad_id, bos_id, *suppress_ids}
    for b in range(regions.shape[0]):
        # (score, tokens, finished, state, weights of each step)
        hypotheses = [(0.0, [], False, decoder.init_state(regions[b : b + 1]), [])]
        for _ in range(max_len):
            candidates = []
            for score, tokens, done, state, weights in hypotheses:
                if done:
                    candidates.append(
                        (score, [*tokens, pad_id], True, state, [*weights, weights[-1]])
                    )
                    continue
                previous = torch.tensor([tokens[-1] if tokens else bos_id], device=regions.device)
                logprobs, step_weights, new_state = decoder.step(previous, state)
                logprobs = logprobs[0].double().tolist()
                for word, logprob in enumerate(logprobs):
                    if word in never:
                        continue
                    trigram = [*tokens[-2:], word]
                    if (
                        block_trigrams
                        and len(tokens) >= 2
                        and any(tokens[i : i + 3] == trigram for i in range(len(tokens) - 2))
                    ):
                        continue
                    candidates.append(
                        (score + logprob, [*tokens, word], word == eos_id, new_state,
                         [*weights, step_weights[0]])
                    )  # fmt: skip
            candidates.sort(key=lambda candidate: -candidate[0])
            hypotheses = candidates[:beam_size]
            if all(h[2] for h in hypotheses):
                break
        lengths = torch.tensor([sum(t != pad_id for t in h[1]) for h in hypotheses])
        divisors = length_penalty(lengths, length_penalty_mode, alpha).tolist()
        penalised = [h[0] / d for h, d in zip(hypotheses, divisors, strict=True)]
        best = max(range(len(hypotheses)), key=lambda i: penalised[i])
        score, tokens, _, _, weights = hypotheses[best]
        results.append(ReferenceHypothesis(tokens, score, penalised[best], torch.stack(weights)))
    return results


class _ShapedEos:
    """A decoder whose ``<eos>`` log-probability is lowered by 10 for the first ``EARLY``
    words and raised by ``boost`` after (then renormalised): even an untrained decoder then
    gives hypotheses of a few words that end at different steps, so the searches' bookkeeping
    of re-indexed, finished and dropped hypotheses is exercised.

    The step count rides in the state under ``KEY`` (a plain int, which ``index_select``
    keeps as it is); a state that is no dict gets the boost from the first word on.
    """

    KEY = "captioning.testing.step"
    EARLY = 2

    def __init__(self, decoder: nn.Module, eos_id: int, boost: float) -> None:
        self.decoder, self.eos_id, self.boost = decoder, eos_id, boost

    def _tag(self, state, step: int | None):
        if step is not None and isinstance(state, dict):
            state[self.KEY] = step
        return state

    def init_state(self, regions: torch.Tensor):
        return self._tag(self.decoder.init_state(regions), 0)

    def step(self, tokens: torch.Tensor, state):
        step = state.get(self.KEY) if isinstance(state, dict) else None
        logprobs, weights, state = self.decoder.step(tokens, state)
        logprobs = logprobs.clone()
        logprobs[:, self.eos_id] += -10.0 if step is not None and step < self.EARLY else self.boost
        return (
            logprobs.log_softmax(-1),
            weights,
            self._tag(state, None if step is None else step + 1),
        )


def _check_best(
    out: BeamOutput,
    b: int,
    reference: ReferenceHypothesis,
    where: str,
    pad_id: int,
    rtol: float,
    weights_atol: float,
) -> None:
    """The batched search's best hypothesis of image ``b`` against the reference's: its words
    (then ``<pad>``), log-probability and score, and the attention of each real step."""
    got = out.tokens[b, 0].tolist()
    words = reference.tokens
    fail_unless(
        got[: len(words)] == words and all(t == pad_id for t in got[len(words) :]),
        f"{where}: the batched search gave {got}, the per-image reference {words}",
    )
    assert_scaled_close(
        out.logprobs[b, 0], torch.tensor(reference.logprob), rtol, f"{where}: log-probability"
    )
    assert_scaled_close(out.scores[b, 0], torch.tensor(reference.score), rtol, f"{where}: score")
    real = sum(t != pad_id for t in words)  # attention after <eos> is not defined
    difference = (out.weights[b, 0, :real] - reference.weights[:real].float()).abs()
    fail_unless(
        not difference.numel() or float(difference.max()) <= weights_atol,
        f"{where}: attention differs from the reference's by up to "
        f"{float(difference.max()) if difference.numel() else 0.0:.3g} "
        f"(allowed {weights_atol:g})",
    )


@torch.no_grad()
def check_beam_search(
    decoder: nn.Module,
    regions: torch.Tensor,
    *,
    beam_sizes: Sequence[int] = (1, 3),
    max_len: int = 8,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    block_trigrams: bool = False,
    suppress_ids: Sequence[int] = (),
    length_penalty_mode: str = "none",
    alpha: float = 0.6,
    eos_boost: float | None = 1.5,
    rtol: float = 1e-5,
    weights_atol: float = 1e-6,
) -> None:
    """The batched ``beam_search`` over this decoder equals :func:`reference_beam_search`.

    For each beam size: the best hypothesis of every image has the reference's words (then
    ``<pad>``), its log-probability and score (relative tolerance ``rtol``) and the attention
    of each real step (absolute ``weights_atol``); ``suppress_ids`` never appear. Then greedy
    decoding equals a beam of one. The decoder runs in eval mode, its ``<eos>``
    log-probability lowered by 10 for the first two words and raised by ``eos_boost`` after,
    so that the hypotheses have a few words and end at different steps (None leaves the
    decoder as it is). Use a small vocabulary: the reference runs in Python.
    """
    name = type(decoder).__name__
    searched = _ShapedEos(decoder, eos_id, eos_boost) if eos_boost is not None else decoder
    ids = {"bos_id": bos_id, "eos_id": eos_id, "pad_id": pad_id}
    with evaluating(decoder):
        for k in beam_sizes:
            out = beam_search(
                searched, regions, beam_size=k, max_len=max_len,
                length_penalty_mode=length_penalty_mode, alpha=alpha,
                block_trigrams=block_trigrams, suppress_ids=tuple(suppress_ids), **ids,
            )  # fmt: skip
            expected = reference_beam_search(
                searched, regions, k, max_len, block_trigrams=block_trigrams,
                suppress_ids=suppress_ids, length_penalty_mode=length_penalty_mode,
                alpha=alpha, **ids,
            )  # fmt: skip
            for b, reference in enumerate(expected):
                where = f"{name}, beam_size={k}, image {b}"
                _check_best(out, b, reference, where, pad_id, rtol, weights_atol)
            for word in suppress_ids:
                fail_unless(
                    not bool((out.tokens == word).any()),
                    f"{name}, beam_size={k}: the suppressed word {word} was generated",
                )
        greedy_tokens, greedy_weights = greedy_decode(searched, regions, max_len=max_len, **ids)
        single = beam_search(searched, regions, beam_size=1, max_len=max_len, **ids)
        fail_unless(
            torch.equal(single.tokens[:, 0], greedy_tokens),
            f"{name}: greedy decoding gave {greedy_tokens.tolist()}, a beam of one "
            f"{single.tokens[:, 0].tolist()}",
        )
        assert_scaled_close(
            single.weights[:, 0], greedy_weights.float(), rtol,
            f"{name}: attention of greedy decoding vs a beam of one",
        )  # fmt: skip
