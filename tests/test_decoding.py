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
        assert out.logprobs[b, 0].item() == pytest.approx(logprob, abs=1e-5)
        assert out.scores[b, 0].item() == pytest.approx(penalised, abs=1e-5)
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
