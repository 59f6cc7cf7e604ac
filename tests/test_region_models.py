"""The refiners (transformer, AoA, M² memory) and the region decoders (Up-Down, AoA, meshed):
padding that changes nothing for every attention x region decoder and for each refiner, the
formulas of the AoA gate, the memory slots and the meshed gates computed by hand, the levels
a refiner hands a meshed decoder, learning through each refiner, and the configs through the
real entry point. (Each region decoder learning end to end with the small CNN, additive and
multi-head attention: tests/test_components.py.)"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from captioning import testing
from captioning.models import (
    AdaptiveAttention,
    AdditiveAttention,
    AoADecoder,
    AoAGate,
    AoARefiner,
    BilinearAttention,
    Captioner,
    DotAttention,
    LSTMDecoder,
    MemoryRefiner,
    MeshedDecoder,
    MultiHeadAttention,
    RefinerProtocol,
    SmallCNN,
    TransformerDecoder,
    TransformerRefiner,
    UpDownDecoder,
)
from captioning.models.meshed import MeshedDecoderLayer
from captioning.models.refiners import RegionSelfAttention, key_padding
from captioning.models.regions import RegionEncoder, Regions
from captioning.train import train
from tests.helpers import compose_train, tiny_shapes_overrides

V = 13
ATTENTION = {
    "additive": partial(AdditiveAttention, attention_dim=12),
    "dot": DotAttention,
    "scaled_dot": partial(DotAttention, scaled=True),
    "bilinear": partial(BilinearAttention, attention_dim=12),
    "multihead": partial(MultiHeadAttention, attention_dim=12, heads=3),
    "adaptive": partial(AdaptiveAttention, attention_dim=12),
}
REGION_DECODERS = {
    "updown": partial(UpDownDecoder, embed_dim=8, hidden_dim=16),
    "aoa": partial(AoADecoder, embed_dim=8, hidden_dim=16),
    "meshed": partial(MeshedDecoder, d_model=16, heads=2, ffn_dim=32, layers=2),
}
DECODERS = {
    **REGION_DECODERS,
    "lstm": partial(LSTMDecoder, embed_dim=8, hidden_dim=16),
    "transformer": partial(TransformerDecoder, d_model=16, heads=2, ffn_dim=32, layers=2),
}
PAPER_ATTENTION = {  # each decoder with the attention of its paper (or the preset's)
    "lstm": "additive",
    "updown": "additive",
    "transformer": "multihead",
    "aoa": "multihead",
    "meshed": "multihead",
}
REFINERS = {
    "transformer": partial(TransformerRefiner, layers=2, d_model=16, heads=2, ffn_dim=32),
    "aoa": partial(AoARefiner, layers=2, d_model=16, heads=2),
    "memory": partial(MemoryRefiner, layers=3, d_model=16, heads=2, ffn_dim=32, memory_slots=5),
}
SIZES = (5, 2, 7)


def _sets(width: int = 16, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, width, generator=generator) for n in SIZES]


def _decoder(name: str, encoder_dim: int, attention: str | None = None, **options):
    attention = ATTENTION[attention or PAPER_ATTENTION[name]]
    return DECODERS[name](vocab_size=V, encoder_dim=encoder_dim, attention=attention, **options)


@pytest.mark.parametrize("decoder", list(REGION_DECODERS))
@pytest.mark.parametrize("attention", list(ATTENTION))
def test_padding_changes_nothing_for_every_attention_and_region_decoder(
    attention: str, decoder: str
) -> None:
    # the contract (teacher forcing == steps, re-indexed states), batched beam search == the
    # per-image reference, then region sets of 5, 2 and 7 padded into one batch == each alone:
    # teacher forcing, masked steps, beam search (1 and 3) and greedy, the padding getting
    # exactly zero attention
    torch.manual_seed(0)
    built = _decoder(decoder, 16, attention)
    regions = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(1))
    testing.check_decoder(built, regions)
    testing.check_beam_search(built, regions)
    testing.check_padding(built, _sets())


@pytest.mark.parametrize("decoder", ["lstm", "transformer", "updown", "aoa"])
@pytest.mark.parametrize("refiner", ["transformer", "aoa"])
def test_refiners_on_padded_regions_equal_each_image_alone(refiner: str, decoder: str) -> None:
    torch.manual_seed(0)
    built = REFINERS[refiner](region_dim=12)
    assert (built.out_dim, built.levels) == (16, 1)
    testing.check_padding(_decoder(decoder, built.out_dim), _sets(width=12), refiner=built)


@pytest.mark.parametrize("levels", [3, 1])
def test_memory_refiner_and_meshed_decoder_on_padded_regions(levels: int) -> None:
    torch.manual_seed(0)
    refiner = REFINERS["memory"](region_dim=12, levels=levels)
    assert (refiner.out_dim, refiner.levels) == (16 * levels, levels)
    decoder = _decoder("meshed", refiner.out_dim, levels=levels)
    testing.check_padding(decoder, _sets(width=12), refiner=refiner)


@pytest.mark.parametrize("refiner", list(REFINERS))
def test_refiners_are_finite_and_blind_to_the_padding(refiner: str) -> None:
    torch.manual_seed(0)
    built = REFINERS[refiner](region_dim=12).eval()
    padded, mask = testing.pad_regions(_sets(width=12))
    mask = torch.cat([mask, torch.zeros(1, mask.shape[1], dtype=torch.bool)])  # all padding
    padded = torch.cat([padded, torch.randn(1, *padded.shape[1:])])
    poisoned = padded.masked_fill(~mask.unsqueeze(-1), float("nan"))
    poisoned[0, -1] = float("inf")  # the tail of image 0 is padding (5 of 7 real)
    with torch.no_grad():
        out, out_poisoned = built(padded, mask), built(poisoned, mask)
    assert isinstance(built, RefinerProtocol)
    assert out.shape == (4, 7, built.out_dim)
    assert bool(out.isfinite().all()) and bool(out_poisoned.isfinite().all())
    assert not out[~mask].any()  # the padding comes out as zeros
    torch.testing.assert_close(out_poisoned, out, rtol=0, atol=0)


def test_memory_refiner_levels_are_its_layers() -> None:
    torch.manual_seed(0)
    refiner = REFINERS["memory"](region_dim=12).eval()
    regions = torch.randn(2, 6, 12)
    with torch.no_grad():
        out = refiner(regions)  # (B, N, 3 * 16)
        x = refiner.projection(regions)  # linear + ReLU + dropout + LayerNorm (12 -> 16)
        for level, layer in enumerate(refiner.layers):
            x = layer(x)
            torch.testing.assert_close(out[..., 16 * level : 16 * (level + 1)], x)
        last = REFINERS["memory"](region_dim=12, levels=1).eval()
        last.load_state_dict(refiner.state_dict())
        torch.testing.assert_close(last(regions), out[..., -16:])
    with pytest.raises(
        ValueError, match=r"refiner.levels=4 must be between 1 and refiner.layers=3"
    ):
        REFINERS["memory"](region_dim=12, levels=4)


def test_memory_slots_extend_the_keys_unmasked() -> None:
    """softmax(q [k; sqrt(d) M_k]^T / sqrt(d)) [v; sqrt(m) M_v], padded keys out, slots in."""
    torch.manual_seed(0)
    heads, dim, slots = 2, 8, 3
    attention = RegionSelfAttention(dim, heads, memory_slots=slots).eval()
    x = torch.randn(2, 5, dim)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    with torch.no_grad():
        ours = attention(x, key_padding(mask))
        d = dim // heads
        q, k, v = attention.qkv(x).chunk(3, dim=-1)
        keys = torch.cat([k, math.sqrt(d) * attention.memory_keys.expand(2, -1, -1)], dim=1)
        values = torch.cat([v, math.sqrt(slots) * attention.memory_values.expand(2, -1, -1)], 1)
        visible = torch.cat([mask, torch.ones(2, slots, dtype=torch.bool)], dim=1)  # (B, N + M)
        heads_out = []
        for h in range(heads):
            part = slice(h * d, (h + 1) * d)
            scores = q[..., part] @ keys[..., part].transpose(1, 2) / math.sqrt(d)  # (B, N, N+M)
            weights = scores.masked_fill(~visible.unsqueeze(1), float("-inf")).softmax(-1)
            heads_out.append(weights @ values[..., part])
        expected = attention.out(torch.cat(heads_out, dim=-1))
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    # slot values start at std 1/slots, keys at 1/head_dim (scaled by sqrt of each when used)
    assert attention.memory_keys.shape == attention.memory_values.shape == (1, slots, dim)


def test_aoa_gate_is_information_times_sigmoid_gate() -> None:
    torch.manual_seed(0)
    gate = AoAGate(attended_dim=6, query_dim=4, out_dim=5)
    attended, query = torch.randn(3, 6), torch.randn(3, 4)
    both = torch.cat([attended, query], dim=-1)
    weight, bias = gate.linear.weight, gate.linear.bias  # rows: W_i then W_g
    information = both @ weight[:5].T + bias[:5]
    attention_gate = torch.sigmoid(both @ weight[5:].T + bias[5:])
    torch.testing.assert_close(gate(attended, query), attention_gate * information)


def test_meshed_layer_gates_each_level_and_averages_the_weights() -> None:
    """Y = LN(X + SA(X)); C_i = LN(Y + W_o att(Y, R_i)); sum_i sigmoid(W_i [Y; C_i]) C_i / sqrt(L)."""
    torch.manual_seed(0)
    layer = MeshedDecoderLayer(8, 2, 16, 0.0, 8, 2, DotAttention).eval()
    x, levels = torch.randn(2, 4, 8), [torch.randn(2, 5, 8), torch.randn(2, 5, 8)]
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    memory = [{"keys": r, "values": r, "mask": mask} for r in levels]
    with torch.no_grad():
        out, weights, _ = layer(x, memory)
        attended, _ = layer.self_attention(x)
        words = layer.self_norm(x + attended)
        meshed, expected_weights = 0, 0
        for gate, regions in zip(layer.level_gates, levels, strict=True):
            scores = (words @ regions.transpose(1, 2)).masked_fill(~mask[:, None], float("-inf"))
            level_weights = scores.softmax(-1)  # (B, T, N)
            context = layer.cross_norm(words + layer.cross_out(level_weights @ regions))
            meshed = meshed + torch.sigmoid(gate(torch.cat([words, context], -1))) * context
            expected_weights = expected_weights + level_weights / 2
        meshed = meshed / math.sqrt(2)
        expected = layer.ffn_norm(meshed + layer.ffn(meshed))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights, expected_weights)
    assert not weights[1, :, 3:].any()


def _cnn() -> SmallCNN:
    return SmallCNN(channels=(8, 16, 16, 16), grid_size=3)


def test_captioner_hands_the_levels_to_a_meshed_decoder_and_refuses_other_decoders() -> None:
    memory = partial(MemoryRefiner, layers=3, d_model=16, heads=2, ffn_dim=32, memory_slots=5)
    meshed = partial(REGION_DECODERS["meshed"], attention=ATTENTION["multihead"])
    model = Captioner(_cnn(), meshed, vocab_size=V, refiner=memory)
    assert model.decoder.levels == 3 and model.refiner.out_dim == 48
    assert model.decoder.layers[0].cross_attention.key_proj.in_features == 16  # one level
    assert Captioner(_cnn(), meshed, V, refiner=partial(memory, levels=1)).decoder.levels == 1
    lstm = partial(DECODERS["lstm"], attention=ATTENTION["additive"])
    with pytest.raises(
        ValueError, match=r"the refiner gives 3 stacked layer outputs and the decoder reads 1"
    ):
        Captioner(_cnn(), lstm, vocab_size=V, refiner=memory)
    with pytest.raises(ValueError, match=r"decoder.levels=3 must be >= 1 and divide .* 16"):
        MeshedDecoder(V, 16, ATTENTION["dot"], levels=3)


def test_captioner_on_padded_region_features_equals_each_image_alone() -> None:
    # RegionEncoder -> memory refiner (3 levels) -> meshed decoder, the mask handed along
    torch.manual_seed(0)
    captioner = Captioner(
        RegionEncoder(feature_dim=12, out_dim=16, dropout=0.0),
        partial(REGION_DECODERS["meshed"], attention=ATTENTION["multihead"]),
        vocab_size=V,
        refiner=REFINERS["memory"],
    ).eval()
    sets = _sets(width=12)
    features, mask = testing.pad_regions(sets)
    tokens = torch.randint(3, V, (3, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, weights = captioner(Regions(features, mask), tokens)
        for row, regions in enumerate(sets):
            alone = Regions(regions[None], torch.ones(1, len(regions), dtype=torch.bool))
            own_logits, own_weights = captioner(alone, tokens[row : row + 1])
            testing.assert_scaled_close(logits[row], own_logits[0])
            testing.assert_scaled_close(weights[row, :, : len(regions)], own_weights[0])
            assert not weights[row, :, len(regions) :].any()


LEARNERS = {  # widths at which a plain LSTM decoder learns one batch (tests/test_components.py)
    "updown": partial(UpDownDecoder, embed_dim=16, hidden_dim=32),
    "aoa": partial(AoADecoder, embed_dim=16, hidden_dim=32),
    "meshed": partial(MeshedDecoder, d_model=32, heads=4, ffn_dim=64, layers=2),
}


@pytest.mark.parametrize(
    ("refiner", "decoder"),
    [("transformer", "updown"), ("aoa", "aoa"), ("memory", "meshed")],
)
def test_learns_one_fixed_batch_through_each_refiner(refiner: str, decoder: str) -> None:
    # 30 AdamW steps, the small CNN trained too (each decoder without a refiner learns with
    # every attention in tests/test_components.py); lr 1e-2 because Up-Down's two stacked
    # LSTMs, started at zero, halve the loss in about 40 steps at the check's default 3e-3
    torch.manual_seed(0)
    heads = partial(MultiHeadAttention, attention_dim=16, heads=4)
    attention = ATTENTION["additive"] if decoder == "updown" else heads
    captioner = Captioner(
        _cnn(),
        partial(LEARNERS[decoder], attention=attention, dropout=0.0),
        vocab_size=V,
        refiner=partial(REFINERS[refiner], d_model=32, dropout=0.0),
    )
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 24, 24, generator=generator)
    tokens = torch.randint(1, V, (3, 6), generator=generator)
    losses = testing.check_learns(captioner, images, tokens, lr=1e-2)
    assert losses[-1] <= 0.5 * losses[0]
    captioner.zero_grad()
    logits, _ = captioner(images, tokens)
    logits.logsumexp(-1).sum().backward()  # memory slots and every level's gate included
    missing = [n for n, p in captioner.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def _model(tmp_path: Path, overrides: list[str]) -> torch.nn.Module:
    model = OmegaConf.to_container(compose_train(tmp_path, overrides).model, resolve=True)
    model.pop("objective")
    return instantiate(model, vocab_size=V)


def test_the_configs_build_the_paper_wiring(tmp_path: Path) -> None:
    model = _model(tmp_path, ["refiner=memory", "decoder=meshed", "attention=multihead"])
    assert isinstance(model.refiner, MemoryRefiner) and isinstance(model.decoder, MeshedDecoder)
    assert model.refiner.levels == model.decoder.levels == len(model.refiner.layers) == 3
    one = _model(tmp_path, ["refiner=memory", "refiner.levels=1", "decoder=aoa"])
    assert one.refiner.levels == 1 and isinstance(one.decoder, AoADecoder)
    with pytest.raises(Exception, match=r"refiner gives 3 stacked .* \(refiner.levels=1\)"):
        _model(tmp_path, ["refiner=memory", "decoder=lstm"])
    for refiner, cls in [("transformer", TransformerRefiner), ("aoa", AoARefiner)]:
        built = _model(tmp_path, [f"refiner={refiner}", "decoder=updown"])
        assert isinstance(built.refiner, cls) and isinstance(built.decoder, UpDownDecoder)
        assert built.refiner.levels == 1


@pytest.mark.slow  # end-to-end runs: make test-fast leaves them out
@pytest.mark.parametrize(
    "overrides",
    [
        ["refiner=transformer", "decoder=updown"],
        ["refiner=transformer", "refiner.levels=2", "decoder=meshed", "attention=dot"],
    ],
    ids=["transformer-updown", "transformer_2_levels-meshed"],
)
def test_fast_dev_run_with_a_refiner_and_a_region_decoder(
    overrides: list[str], tmp_path: Path
) -> None:
    # the AoA and M² pairs run as the aoa_shapes / m2_transformer_shapes presets
    # (tests/test_experiments.py)
    cfg = compose_train(
        tmp_path,
        [*overrides, "encoder=small_cnn", "trainer.fast_dev_run=true", "samples=0",
         *tiny_shapes_overrides()],
    )  # fmt: skip
    train(cfg)
    scores = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert "CIDEr-D" in scores and "grounding" in scores
