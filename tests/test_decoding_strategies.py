"""Diverse beam search and sampling against straightforward per-image Python versions written
here (one image, one group, one hypothesis at a time), the Hamming penalty worked by hand,
the equalities with beam search and greedy decoding, and the settings' checks."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from captioning import testing
from captioning.decoding import (
    DecodingConfig,
    beam_search,
    filter_logits,
    greedy_decode,
    length_penalty,
    sample_decode,
)
from captioning.models.state import State
from captioning.testing.search import _ShapedEos
from tests.test_decoding import BOS, EOS, PAD, UNK, StopAtDecoder, _model

V = 13
IDS = {"bos_id": BOS, "eos_id": EOS, "pad_id": PAD}
OPTIONS = [{}, {"block_trigrams": True, "suppress_ids": (UNK,), "length_penalty_mode": "wu"}]


def _decoder(name: str, images: int = 3, seed: int = 0):
    """A random small decoder whose captions end after a few words, at different steps, and
    the regions of ``images`` random images."""
    model = _model(seed, name)
    regions = model.encode(
        torch.rand(images, 3, 24, 24, generator=torch.Generator().manual_seed(seed))
    )
    return _ShapedEos(model.decoder, EOS, 1.5), regions.detach()


def _repeats_trigram(tokens: list[int], word: int) -> bool:
    trigram = [*tokens[-2:], word]
    return len(tokens) >= 2 and any(tokens[i : i + 3] == trigram for i in range(len(tokens) - 2))


# ------------------------------------------------------------------ diverse beam search


@torch.no_grad()
def reference_diverse_beam(
    decoder, regions, beam_size, groups, diversity, max_len, n_best, *,
    block_trigrams=False, suppress_ids=(), length_penalty_mode="none", alpha=0.6,
) -> list[list[tuple[list[int], float, float, torch.Tensor]]]:  # fmt: skip
    """Per image, its ``n_best`` (tokens, log-probability, score, attention), best first."""
    width = beam_size // groups
    never = {PAD, BOS, *suppress_ids}
    nothing = torch.zeros(regions.shape[1])
    results = []
    for b in range(len(regions)):
        # per group, its hypotheses: (log-probability, tokens, finished, state, weights)
        start = (0.0, [], False, decoder.init_state(regions[b : b + 1]), [])
        beams = [[start] for _ in range(groups)]
        for _ in range(max_len):
            chosen: Counter[int] = Counter()  # the words earlier groups chose at this step
            for group in range(groups):
                candidates = []  # (ranked, log-probability, tokens, finished, state, weights)
                for score, tokens, done, state, weights in beams[group]:
                    if done:
                        candidates.append(
                            (score, score, [*tokens, PAD], True, state, [*weights, nothing])
                        )
                        continue
                    previous = torch.tensor([tokens[-1] if tokens else BOS])
                    logprobs, step_weights, new_state = decoder.step(previous, state)
                    for word, logprob in enumerate(logprobs[0].double().tolist()):
                        if word in never or (block_trigrams and _repeats_trigram(tokens, word)):
                            continue
                        candidates.append(
                            (score + logprob - diversity * chosen[word], score + logprob,
                             [*tokens, word], word == EOS, new_state, [*weights, step_weights[0]])
                        )  # fmt: skip
                candidates.sort(key=lambda candidate: -candidate[0])
                beams[group] = [candidate[1:] for candidate in candidates[:width]]
                chosen.update(h[1][-1] for h in beams[group] if h[1][-1] != PAD)
            if all(h[2] for beam in beams for h in beam):
                break
        hypotheses = [h for beam in beams for h in beam]
        lengths = torch.tensor([sum(t != PAD for t in h[1]) for h in hypotheses])
        divisors = length_penalty(lengths, length_penalty_mode, alpha).tolist()
        ranked = sorted(
            ((h[1], h[0], h[0] / d, torch.stack(h[4])) for h, d in zip(hypotheses, divisors, strict=True)),
            key=lambda h: -h[2],
        )  # fmt: skip
        results.append(ranked[:n_best])
    return results


@pytest.mark.parametrize(
    ("name", "beam_size", "groups", "options"),
    [(name, k, g, options) for name, k, g in [("lstm", 4, 2), ("lstm", 6, 3), ("lstm", 3, 3)]
     for options in OPTIONS] + [("transformer", 6, 3, OPTIONS[1])],
)  # fmt: skip
def test_diverse_beam_equals_per_image_groups(
    name: str, beam_size: int, groups: int, options: dict
) -> None:
    # every one of the n best: words, log-probability, score, attention
    decoder, regions = _decoder(name)
    out = beam_search(
        decoder, regions, beam_size=beam_size, max_len=7, n_best=beam_size, groups=groups,
        diversity=0.7, **options, **IDS,
    )  # fmt: skip
    expected = reference_diverse_beam(decoder, regions, beam_size, groups, 0.7, 7, beam_size,
                                      **options)  # fmt: skip
    for b, hypotheses in enumerate(expected):
        for j, (tokens, logprob, score, weights) in enumerate(hypotheses):
            got = out.tokens[b, j].tolist()
            assert got == tokens + [PAD] * (len(got) - len(tokens)), (b, j)
            testing.assert_scaled_close(out.logprobs[b, j], torch.tensor(logprob))
            testing.assert_scaled_close(out.scores[b, j], torch.tensor(score))
            torch.testing.assert_close(out.weights[b, j, : len(tokens)], weights.float())
            assert (out.weights[b, j, len(tokens) :] == 0).all()


@pytest.mark.parametrize("options", OPTIONS)
def test_one_group_is_beam_search_and_no_penalty_is_independent_groups(options: dict) -> None:
    decoder, regions = _decoder("gru")
    plain = beam_search(decoder, regions, beam_size=4, max_len=7, n_best=4, **options, **IDS)
    one = beam_search(
        decoder, regions, beam_size=4, max_len=7, n_best=4, groups=1, diversity=3.0,
        **options, **IDS,
    )  # fmt: skip
    for field in ("tokens", "scores", "logprobs", "weights"):
        assert torch.equal(getattr(one, field), getattr(plain, field)), field
    # diversity 0: each of 2 groups is a beam search of 2 of its own, so every hypothesis
    # of beam 2 comes twice
    two = beam_search(decoder, regions, beam_size=2, max_len=7, n_best=2, **options, **IDS)
    doubled = beam_search(
        decoder, regions, beam_size=4, max_len=7, n_best=4, groups=2, diversity=0.0,
        **options, **IDS,
    )  # fmt: skip
    length = two.tokens.shape[-1]
    assert torch.equal(doubled.tokens[:, ::2, :length], two.tokens)
    assert torch.equal(doubled.tokens[:, 1::2, :length], two.tokens)
    torch.testing.assert_close(doubled.scores[:, ::2], two.scores)


class TableDecoder(torch.nn.Module):
    """A contract-true decoder that gives every row the log-softmax of ``tables[t]`` at step
    t, whatever the words, and ``<eos>`` (almost surely) after the last table."""

    def __init__(self, *tables: list[float]) -> None:
        super().__init__()
        ending = [-30.0] * V
        ending[EOS] = 30.0
        self.tables = torch.tensor([*tables, ending])  # (steps + 1, V)

    def init_state(self, regions: torch.Tensor) -> State:
        return State(step=torch.zeros(len(regions), dtype=torch.long), memory=regions)

    def step(self, tokens: torch.Tensor, state: State):
        logits = self.tables[state["step"].clamp(max=len(self.tables) - 1)]  # (M, V)
        regions = state["memory"].shape[1]
        weights = torch.full((len(tokens), regions), 1 / regions)
        return (
            logits.log_softmax(-1),
            weights,
            State(step=state["step"] + 1, memory=state["memory"]),
        )


def _logits(**words: float) -> list[float]:
    logits = [-10.0] * V
    for word, value in words.items():
        logits[int(word[1:])] = value
    return logits


@pytest.mark.parametrize(
    ("diversity", "first_words"),
    [
        (0.2, [4, 4, 4]),  # 0.5 apart: a penalty of 0.2 or 0.4 leaves word 4 first
        (0.3, [4, 4, 5]),  # group 2: word 4 chosen twice, -0.6, now below word 5
        (0.6, [4, 5, 4]),  # group 1: word 4 -0.6 < word 5; group 2: 4 -0.6 and 5 -0.6: 4 again
        (2.5, [4, 5, 6]),  # group 2: word 4 -2.5, word 5 -2.5: word 6
    ],
)
def test_hamming_penalty_by_hand(diversity: float, first_words: list[int]) -> None:
    # 3 groups of one beam: group g's word loses diversity x (times groups < g chose it)
    decoder = TableDecoder(_logits(w4=3.0, w5=2.5, w6=1.0))
    regions = torch.zeros(2, 4, 3)
    out = beam_search(
        decoder, regions, beam_size=3, max_len=4, n_best=3, groups=3, diversity=diversity, **IDS
    )
    logprobs = decoder.tables[0].log_softmax(-1)
    expected = sorted(first_words, key=lambda w: -float(logprobs[w]))  # ranked by log-probability
    assert out.tokens[:, :, 0].tolist() == [expected, expected]
    assert (out.tokens[:, :, 1] == EOS).all()
    # the score is the plain log-probability: the penalty only steered the choice
    eos = float(decoder.tables[1].log_softmax(-1)[EOS])
    torch.testing.assert_close(out.scores[0], logprobs[expected] + eos)


def test_a_finished_beam_is_not_penalised() -> None:
    # 2 groups of 2: both start with word 4 and with <eos>. At step 1 group 0 keeps <eos>
    # and 4 6; group 1 keeps its <eos> (its <pad> is no choice, so never penalised) and 4 7
    # (4 6 lost 1.2 to group 0's 6); counting <pad> would put 4 7 and 4 8 first
    decoder = TableDecoder(_logits(w4=3.0, w2=2.8), _logits(w6=1.0, w7=0.8, w8=0.7))
    out = beam_search(
        decoder, torch.zeros(1, 4, 3), beam_size=4, max_len=4, n_best=4, groups=2,
        diversity=1.2, **IDS,
    )  # fmt: skip
    captions = sorted(tuple(t for t in row if t != PAD) for row in out.tokens[0].tolist())
    assert captions == [(EOS,), (EOS,), (4, 6, EOS), (4, 7, EOS)]


def test_diverse_beam_gives_distinct_captions_where_beam_collapses() -> None:
    # word 4 dominates the first step, so every beam continues it; each group starts another
    decoder = TableDecoder(
        _logits(w4=8.0, w5=1.0, w6=0.9, w7=0.8), _logits(w5=1.0, w6=0.9, w7=0.8, w8=0.7)
    )
    regions = torch.zeros(3, 4, 3)
    plain = beam_search(decoder, regions, beam_size=4, max_len=4, n_best=4, **IDS)
    diverse = beam_search(
        decoder, regions, beam_size=4, max_len=4, n_best=4, groups=4, diversity=10.0, **IDS
    )
    for b in range(3):
        assert plain.tokens[b, :, 0].tolist() == [4, 4, 4, 4]
        assert sorted(plain.tokens[b, :, 1].tolist()) == [5, 6, 7, 8]
        assert sorted(diverse.tokens[b, :, 0].tolist()) == [4, 5, 6, 7]
        assert diverse.tokens[b, :, 1].tolist() == [5, 6, 7, 8]  # each group's best second word
        assert diverse.tokens[b, 0, :2].tolist() == [4, 5]  # the most likely caption first


# ------------------------------------------------------------------ sampling


def _allowed(logprobs: list[float], temperature: float, top_k: int, top_p: float) -> dict:
    """The sampling distribution of one step, in plain Python: word -> probability."""
    scaled = {w: lp / temperature for w, lp in enumerate(logprobs) if lp != float("-inf")}
    order = sorted(scaled, key=lambda w: -scaled[w])
    if top_k:
        order = [w for w in order if scaled[w] >= scaled[order[min(top_k, len(order)) - 1]]]
    peak = scaled[order[0]]
    weights = {w: torch.tensor(scaled[w] - peak, dtype=torch.float64).exp().item() for w in order}
    total = sum(weights.values())
    kept, mass = [], 0.0
    for w in order:
        if mass >= top_p:
            break
        kept.append(w)
        mass += weights[w] / total
    total = sum(weights[w] for w in kept)
    return {w: weights[w] / total for w in kept}


def _masked_logprobs(logprobs, tokens, never, block_trigrams) -> list[float]:
    values = logprobs[0].double().tolist()
    return [
        float("-inf") if w in never or (block_trigrams and _repeats_trigram(tokens, w)) else lp
        for w, lp in enumerate(values)
    ]


@torch.no_grad()
def replay_sample(decoder, regions, tokens, *, temperature, top_k, top_p, never, block_trigrams):
    """One sampled caption of one image, stepped alone: its length, the model's summed
    log-probability, the attention of each step; fails on a word outside the distribution."""
    state, previous, total, weights, kept = decoder.init_state(regions), BOS, 0.0, [], []
    for word in tokens:
        logprobs, step_weights, state = decoder.step(torch.tensor([previous]), state)
        values = _masked_logprobs(logprobs, kept, never, block_trigrams)
        assert word in _allowed(values, temperature, top_k, top_p), (kept, word)
        total += values[word]
        weights.append(step_weights[0])
        kept.append(word)
        previous = word
        if word == EOS:
            break
    return len(kept), total, torch.stack(weights)


PLAIN = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
CUT = {"temperature": 0.7, "top_k": 3, "top_p": 1.0, "block_trigrams": True,
       "suppress_ids": (UNK,), "length_penalty_mode": "wu"}  # fmt: skip
NUCLEUS = {"temperature": 1.3, "top_k": 0, "top_p": 0.8}


@pytest.mark.parametrize(
    ("name", "settings"),
    [("lstm", PLAIN), ("lstm", CUT), ("lstm", NUCLEUS), ("transformer", CUT)],
)
def test_samples_equal_their_per_image_replay(name: str, settings: dict) -> None:
    # each sample's words lie in its step's distribution; log-probability, score, attention
    # and the ranking are those of the caption stepped alone
    decoder, regions = _decoder(name, images=3)
    generator = torch.Generator().manual_seed(1)
    out = sample_decode(decoder, regions, n=4, max_len=7, generator=generator, **settings, **IDS)
    never = {PAD, BOS, *settings.get("suppress_ids", ())}
    mode = settings.get("length_penalty_mode", "none")
    assert out.tokens.shape[:2] == (3, 4)
    for b in range(3):
        assert (out.scores[b, :-1] >= out.scores[b, 1:]).all()
        for j in range(4):
            row = out.tokens[b, j].tolist()
            real = row.index(EOS) + 1 if EOS in row else len(row)
            assert all(t == PAD for t in row[real:])
            length, total, weights = replay_sample(
                decoder, regions[b : b + 1], row[:real], never=never,
                block_trigrams=settings.get("block_trigrams", False),
                **{k: settings[k] for k in ("temperature", "top_k", "top_p")},
            )  # fmt: skip
            assert length == real
            testing.assert_scaled_close(out.logprobs[b, j], torch.tensor(total))
            divisor = length_penalty(torch.tensor([length]), mode)[0]
            testing.assert_scaled_close(out.scores[b, j], torch.tensor(total) / divisor)
            torch.testing.assert_close(out.weights[b, j, :real], weights.float())
            assert (out.weights[b, j, real:] == 0).all()


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.5, 4, 1.0), (1.0, 0, 0.6), (2.0, 5, 0.7)]
)
def test_first_words_follow_the_filtered_distribution(
    temperature: float, top_k: int, top_p: float
) -> None:
    decoder = TableDecoder(_logits(w4=2.0, w5=1.6, w6=1.1, w7=0.5, w8=0.0, w9=-0.5))
    out = sample_decode(
        decoder, torch.zeros(1, 4, 3), n=4000, max_len=1, temperature=temperature, top_k=top_k,
        top_p=top_p, generator=torch.Generator().manual_seed(0), **IDS,
    )  # fmt: skip
    logprobs = decoder.tables[0].log_softmax(-1).tolist()
    never = {PAD, BOS}
    expected = _allowed(
        [float("-inf") if w in never else lp for w, lp in enumerate(logprobs)],
        temperature, top_k, top_p,
    )  # fmt: skip
    counts = Counter(out.tokens[0, :, 0].tolist())
    assert set(counts) <= set(expected)  # nothing outside the top-k / nucleus
    for word, probability in expected.items():
        assert counts[word] / 4000 == pytest.approx(probability, abs=0.03), word


def test_filter_logits_by_hand() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 5.0, 1.0, -1.0]])
    inf = float("-inf")
    assert filter_logits(logits, top_k=2).tolist() == [[inf, 3.0, inf, 2.0], [5.0, 5.0, inf, inf]]
    # probabilities of row 0: 0.032, 0.644, 0.087, 0.237: 0.6 is reached by word 1 alone
    assert filter_logits(logits[:1], top_p=0.6).tolist() == [[inf, 3.0, inf, inf]]
    assert filter_logits(logits[:1], top_p=0.7).tolist() == [[inf, 3.0, inf, 2.0]]
    assert torch.equal(filter_logits(logits, top_k=0, top_p=1.0), logits)


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_top_k_one_and_a_cold_temperature_are_greedy(name: str) -> None:
    decoder, regions = _decoder(name, images=4)
    tokens, weights = greedy_decode(decoder, regions, max_len=8, **IDS)
    for settings in ({"top_k": 1}, {"temperature": 1e-4}):
        out = sample_decode(decoder, regions, n=3, max_len=8, **settings, **IDS)
        for j in range(3):
            assert torch.equal(out.tokens[:, j], tokens), settings
            torch.testing.assert_close(out.weights[:, j], weights)


def test_sampling_is_reproducible_from_its_generator() -> None:
    decoder, regions = _decoder("lstm", images=3)

    def draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return sample_decode(decoder, regions, n=5, max_len=7, generator=generator, **IDS).tokens

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_sampled_images_leave_the_batch_when_their_captions_have_ended() -> None:
    decoder, stops = StopAtDecoder(), [2, 5, 0, 3]
    regions = torch.zeros(len(stops), 4, 3)
    regions[:, 0, 0] = torch.tensor(stops, dtype=torch.float)
    out = sample_decode(decoder, regions, n=3, max_len=9, generator=torch.Generator(), **IDS)
    # image b says <eos> at step stop (its odds are e^40 to 1), all 3 samples alike in that
    assert decoder.rows == [len(stops), *(3 * sum(s >= t for s in stops) for t in range(1, 6))]
    assert out.tokens.shape == (len(stops), 3, max(stops) + 1)
    for b, stop in enumerate(stops):
        assert (out.tokens[b, :, stop] == EOS).all() and (out.tokens[b, :, stop + 1 :] == PAD).all()


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"beam_size": 4, "groups": 0}, r"decoding.groups must be an integer >= 1, got 0"),
        ({"beam_size": 4, "groups": 3}, r"decoding.groups=3 does not divide decoding.beam_size=4"),
        ({"diversity": -0.5}, r"decoding.diversity must be a number >= 0, got -0.5"),
        ({"diversity": "high"}, r"decoding.diversity must be a number >= 0"),
        ({"sample": "yes"}, r"decoding.sample must be true or false"),
        ({"sample": True, "beam_size": 4, "groups": 2}, r"decoding.groups=2 with decoding.sample"),
        ({"temperature": 0}, r"decoding.temperature must be a number > 0, got 0"),
        ({"temperature": float("inf")}, r"decoding.temperature must be a number > 0"),
        ({"top_k": -1}, r"decoding.top_k must be an integer >= 0, got -1"),
        ({"top_k": 1.5}, r"decoding.top_k must be an integer >= 0"),
        ({"top_p": 0.0}, r"decoding.top_p must be a number in \(0, 1\], got 0.0"),
        ({"top_p": 1.5}, r"decoding.top_p must be a number in \(0, 1\], got 1.5"),
        ({"seed": "zero"}, r"decoding.seed must be an integer"),
        ({"n_best": 3, "beam_size": 2}, r"decoding.n_best=3 exceeds decoding.beam_size=2"),
    ],
)
def test_bad_strategy_settings_name_their_keys(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DecodingConfig.of(settings)


def test_sampling_takes_any_n_best_and_old_settings_get_the_defaults() -> None:
    assert DecodingConfig.of({"sample": True, "beam_size": 1, "n_best": 5}).n_best == 5
    assert not DecodingConfig.of({"sample": True}).plain_greedy
    stored = {  # a checkpoint's decoding from before the strategies
        "max_len": 20, "beam_size": 3, "n_best": 2, "length_penalty": "none", "alpha": 0.6,
        "block_trigrams": False, "suppress_unk": True,
    }  # fmt: skip
    config = DecodingConfig.of(stored)
    assert (config.groups, config.sample, config.top_k, config.top_p) == (1, False, 0, 1.0)
    assert config.as_dict().items() >= stored.items()
