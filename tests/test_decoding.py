"""Batched beam search against the straightforward per-image beam search of
``captioning.testing`` (the check users run on their decoders; greedy decoding equal to a beam
of one is part of it), images leaving the batch, n-best, trigram blocking, bad settings."""

from functools import partial

import pytest
import torch

from captioning import testing
from captioning.decoding import beam_search, length_penalty
from captioning.models import (
    AdditiveAttention,
    Captioner,
    LSTMDecoder,
    MultiHeadAttention,
    SmallCNN,
    TransformerDecoder,
)
from captioning.models.state import State

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
    return Captioner(SmallCNN(channels=(8, 8, 8, 8), grid_size=3), decoder, vocab_size=V).eval()


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize(
    "options", [{}, {"block_trigrams": True, "suppress_ids": (UNK,), "length_penalty_mode": "wu"}]
)
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_batched_beam_equals_per_image_beam(k: int, options: dict, decoder: str) -> None:
    # words, log-probability, score and attention of each image's best hypothesis; greedy
    # decoding equal to a beam of one; <eos> held back for two words, then made likely
    model = _model(decoder_name=decoder)
    regions = model.encode(torch.rand(B, 3, 24, 24))
    testing.check_beam_search(
        model.decoder, regions, beam_sizes=(k,), max_len=8, bos_id=BOS, eos_id=EOS,
        pad_id=PAD, eos_boost=1.5, **options,
    )  # fmt: skip


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
        testing.assert_scaled_close(out.scores[b], alone.scores[0])
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
    from tests.helpers import bare_module

    module = bare_module(decoding={"beam_size": 3, "n_best": 2})
    with pytest.raises(ValueError, match=message):
        module.decoding = settings  # as eval.py and caption.py set it from their configs
    assert module.decoding == {"beam_size": 3, "n_best": 2}  # the old settings stay
    with pytest.raises(ValueError, match=message):
        CaptioningModule(**{**module.hparams, "decoding": settings})
