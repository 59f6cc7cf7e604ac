"""Batched beam search against a straightforward per-image beam search, and greedy."""

from functools import partial

import pytest
import torch

from captioning.decoding import beam_search, greedy_decode, length_penalty
from captioning.models import (
    AdditiveAttention,
    Captioner,
    LSTMDecoder,
    MultiHeadAttention,
    SmallCNN,
    TransformerDecoder,
)
from captioning.models.state import State
from tests.conftest import assert_scaled_close

V, B = 13, 4
BOS, EOS, PAD, UNK = 1, 2, 0, 3


DECODERS = {
    "lstm": partial(
        LSTMDecoder, attention=partial(AdditiveAttention, attention_dim=8), embed_dim=8, hidden_dim=16
    ),
    "gru": partial(
        LSTMDecoder, attention=partial(AdditiveAttention, attention_dim=8), embed_dim=8, hidden_dim=16,
        cell="gru",
    ),
    "transformer": partial(
        TransformerDecoder, attention=partial(MultiHeadAttention, attention_dim=8, heads=2),
        d_model=16, heads=2, layers=2, ffn_dim=32, max_len=12,
    ),
}  # fmt: skip


def _model(seed: int = 0, decoder_name: str = "lstm") -> Captioner:
    torch.manual_seed(seed)
    decoder = DECODERS[decoder_name]
    model = Captioner(SmallCNN(channels=(8, 8, 8, 8), grid_size=3), decoder, vocab_size=V).eval()
    with torch.no_grad():  # make <eos> likely enough that some hypotheses end early
        model.decoder.classifier.bias[EOS] += 1.5
    return model


@torch.no_grad()
def reference_beam(decoder, regions, k, max_len, block_trigrams=False, suppress=(), mode="none"):
    """One image at a time, Python lists: the specification the batched search must match."""
    results = []
    for b in range(regions.shape[0]):
        hyps = [(0.0, [], False, decoder.init_state(regions[b : b + 1]), [])]
        for _ in range(max_len):
            candidates = []
            for score, tokens, done, state, weights in hyps:
                if done:
                    candidates.append((score, [*tokens, PAD], True, state, [*weights, weights[-1]]))
                    continue
                previous = torch.tensor([tokens[-1] if tokens else BOS])
                logprobs, step_weights, new_state = decoder.step(previous, state)
                logprobs = logprobs[0].double()
                for word in range(V):
                    if word in (*suppress, PAD, BOS):
                        continue
                    trigram = [*tokens[-2:], word]
                    if (
                        block_trigrams
                        and len(tokens) >= 2
                        and any(tokens[i : i + 3] == trigram for i in range(len(tokens) - 2))
                    ):
                        continue
                    candidates.append(
                        (
                            score + float(logprobs[word]),
                            [*tokens, word],
                            word == EOS,
                            new_state,
                            [*weights, step_weights[0]],
                        )
                    )
            candidates.sort(key=lambda c: -c[0])
            hyps = candidates[:k]
            if all(h[2] for h in hyps):
                break
        lengths = torch.tensor([sum(t != PAD for t in h[1]) for h in hyps])
        penalised = [
            h[0] / float(p) for h, p in zip(hyps, length_penalty(lengths, mode), strict=True)
        ]
        best = max(range(len(hyps)), key=lambda i: penalised[i])
        score, tokens, _, _, weights = hyps[best]
        results.append((tokens, score, penalised[best], torch.stack(weights)))
    return results


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize(
    "options", [{}, {"block_trigrams": True, "suppress": (UNK,), "mode": "wu"}]
)
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_batched_beam_equals_per_image_beam(k: int, options: dict, decoder: str) -> None:
    model = _model(decoder_name=decoder)
    regions = model.encode(torch.rand(B, 3, 24, 24))
    out = beam_search(
        model.decoder, regions, BOS, EOS, PAD, beam_size=k, max_len=8,
        length_penalty_mode=options.get("mode", "none"),
        block_trigrams=options.get("block_trigrams", False),
        suppress_ids=options.get("suppress", ()),
    )  # fmt: skip
    expected = reference_beam(model.decoder, regions, k, 8, **options)
    for b, (tokens, logprob, penalised, weights) in enumerate(expected):
        got = out.tokens[b, 0].tolist()
        assert got[: len(tokens)] == tokens and all(t == PAD for t in got[len(tokens) :])
        assert_scaled_close(out.logprobs[b, 0], torch.tensor(logprob))
        assert_scaled_close(out.scores[b, 0], torch.tensor(penalised))
        real = sum(t != PAD for t in tokens)  # attention after <eos> is not defined
        torch.testing.assert_close(out.weights[b, 0, :real], weights[:real], atol=1e-6, rtol=0)
    if options.get("suppress"):
        assert not (out.tokens == UNK).any()


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_greedy_equals_beam_of_one(decoder: str) -> None:
    model = _model(1, decoder)
    regions = model.encode(torch.rand(B, 3, 24, 24))
    tokens, weights = greedy_decode(model.decoder, regions, BOS, EOS, PAD, max_len=10)
    beam = beam_search(model.decoder, regions, BOS, EOS, PAD, beam_size=1, max_len=10)
    assert torch.equal(beam.tokens[:, 0], tokens)
    torch.testing.assert_close(beam.weights[:, 0], weights)


class StopAtDecoder(torch.nn.Module):
    """A contract-true decoder whose image b says ``<eos>`` from step ``regions[b, 0, 0]`` on.

    Memory stays one row per image (the k hypotheses of an image share it), and every call
    records how many rows it was given.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []
        self.words = torch.randn(V, V, generator=torch.Generator().manual_seed(0))

    def init_state(self, regions: torch.Tensor) -> State:
        return State(step=torch.zeros(len(regions), dtype=torch.long),
                     memory=State(stop=regions[:, 0, 0].long(), regions=regions))  # fmt: skip

    def step(self, tokens: torch.Tensor, state: State):
        self.rows.append(len(tokens))
        stop = state["memory"]["stop"].repeat_interleave(
            len(tokens) // len(state["memory"]["stop"])
        )
        logits = self.words[tokens].clone()  # depends on the previous word only
        logits[:, EOS] = torch.where(state["step"] >= stop, 20.0, -20.0)
        weights = torch.full((len(tokens), 4), 0.25)
        return (
            logits.log_softmax(-1),
            weights,
            State(step=state["step"] + 1, memory=state["memory"]),
        )


def test_images_leave_the_batch_when_their_beams_have_ended() -> None:
    """Finished images stop costing steps, and dropping them changes no caption."""
    decoder, stops = StopAtDecoder(), [2, 6, 0, 4, 6, 1]
    regions = torch.zeros(len(stops), 4, 3)
    regions[:, 0, 0] = torch.tensor(stops, dtype=torch.float)
    out = beam_search(decoder, regions, BOS, EOS, PAD, beam_size=3, max_len=10, n_best=2)
    # image b's beams all end at step stop (at step 1 for stop 0: the first step expands one
    # beam into k different words, so only the best says <eos> there)
    last = [max(stop, 1) for stop in stops]
    assert decoder.rows == [len(stops), *(3 * sum(e >= t for e in last) for t in range(1, 7))]
    assert out.tokens.shape == (len(stops), 2, max(last) + 1)
    for b, (stop, end) in enumerate(zip(stops, last, strict=True)):
        alone = beam_search(decoder, regions[b : b + 1], BOS, EOS, PAD, 3, 10, n_best=2)
        assert alone.tokens.shape[-1] == end + 1 and alone.tokens[0, 0, stop] == EOS
        assert torch.equal(out.tokens[b, :, : end + 1], alone.tokens[0])  # same as alone
        assert (out.tokens[b, :, end + 1 :] == PAD).all()
        assert_scaled_close(out.scores[b], alone.scores[0])
        torch.testing.assert_close(out.weights[b, :, : end + 1], alone.weights[0])
        assert (out.weights[b, :, end + 1 :] == 0).all()


def test_half_precision_regions_with_float_attention() -> None:
    """Under autocast the regions may be bf16 while softmax gives float32 weights."""
    regions = torch.zeros(3, 4, 3, dtype=torch.bfloat16)
    regions[:, 0, 0] = torch.tensor([1.0, 3.0, 2.0])
    out = beam_search(StopAtDecoder(), regions, BOS, EOS, PAD, beam_size=2, max_len=6)
    assert out.weights.dtype == torch.float32 and out.tokens.shape == (3, 1, 4)
    assert [row.index(EOS) for row in out.tokens[:, 0].tolist()] == [1, 3, 2]


def test_n_best_is_sorted_and_unfinished_hypotheses_are_returned() -> None:
    model = _model(2)
    with torch.no_grad():
        model.decoder.classifier.bias[EOS] = -1e4  # <eos> never wins
    regions = model.encode(torch.rand(B, 3, 24, 24))
    out = beam_search(model.decoder, regions, BOS, EOS, PAD, beam_size=4, max_len=6, n_best=3)
    assert out.tokens.shape == (B, 3, 6) and out.weights.shape == (B, 3, 6, 9)
    assert (out.scores[:, :-1] >= out.scores[:, 1:]).all()
    assert not (out.tokens == EOS).any() and not (out.tokens == PAD).any()


def test_trigram_blocking_removes_repeats() -> None:
    model = _model(3)
    with torch.no_grad():  # one word dominates: unblocked output repeats it
        model.decoder.classifier.bias[7] = 50.0
    regions = model.encode(torch.rand(2, 3, 24, 24))
    plain = beam_search(model.decoder, regions, BOS, EOS, PAD, beam_size=2, max_len=6)
    assert (plain.tokens[:, 0] == 7).all()
    blocked = beam_search(
        model.decoder, regions, BOS, EOS, PAD, beam_size=2, max_len=6, block_trigrams=True
    )
    for row in blocked.tokens[:, 0].tolist():
        trigrams = [tuple(row[i : i + 3]) for i in range(len(row) - 2) if PAD not in row[i : i + 3]]
        assert len(trigrams) == len(set(trigrams))


def test_bad_arguments() -> None:
    model = _model()
    regions = model.encode(torch.rand(1, 3, 24, 24))
    with pytest.raises(ValueError, match=r"decoding\.n_best"):
        beam_search(model.decoder, regions, BOS, EOS, PAD, beam_size=2, n_best=3)
    with pytest.raises(ValueError, match=r"decoding\.length_penalty"):
        length_penalty(torch.tensor([3]), "cubic")
    with pytest.raises(ValueError, match=r"decoding\.length_penalty"):
        beam_search(model.decoder, regions, BOS, EOS, PAD, length_penalty_mode="cubic")
    with pytest.raises(ValueError, match=r"decoding\.max_len must be >= 1, got 0"):
        beam_search(model.decoder, regions, BOS, EOS, PAD, max_len=0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"beam_size": 0}, r"decoding.beam_size must be an integer >= 1, got 0"),
        ({"beam_size": 2.5}, r"decoding.beam_size must be an integer >= 1, got 2.5"),
        ({"max_len": 0}, r"decoding.max_len must be an integer >= 1, got 0"),
        ({"beam_size": 2, "n_best": 3}, r"decoding.n_best=3 exceeds decoding.beam_size=2"),
        ({"length_penalty": "wu2"}, r"decoding.length_penalty must be none, average or wu"),
        ({"alpha": -1}, r"decoding.alpha must be a number >= 0, got -1"),
    ],
)
def test_bad_decoding_settings_fail_when_set(settings: dict, message: str) -> None:
    from captioning.module import CaptioningModule
    from tests.conftest import bare_module

    module = bare_module(decoding={"beam_size": 3, "n_best": 2})
    with pytest.raises(ValueError, match=message):
        module.decoding = settings  # as eval.py and caption.py set it from their configs
    assert module.decoding == {"beam_size": 3, "n_best": 2}  # the old settings stay
    with pytest.raises(ValueError, match=message):
        CaptioningModule(**{**module.hparams, "decoding": settings})
