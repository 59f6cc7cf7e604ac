"""Region sets of different sizes padded into one batch: every attention x decoder, the
region encoder, the Captioner, SCST sampling and the loss give each image what it gets alone."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from captioning import testing
from captioning.models import (
    AdaptiveAttention,
    AdditiveAttention,
    BilinearAttention,
    Captioner,
    DotAttention,
    LSTMDecoder,
    MultiHeadAttention,
    TransformerDecoder,
)
from captioning.models.regions import RegionEncoder, Regions
from captioning.objectives import CrossEntropy
from captioning.scst import sample_captions

ATTENTION = {
    "additive": partial(AdditiveAttention, attention_dim=12),
    "dot": DotAttention,
    "scaled_dot": partial(DotAttention, scaled=True),
    "bilinear": partial(BilinearAttention, attention_dim=12),
    "multihead": partial(MultiHeadAttention, attention_dim=12, heads=3),
    "adaptive": partial(AdaptiveAttention, attention_dim=12),
}
DECODERS = {
    "lstm": partial(LSTMDecoder, embed_dim=8, hidden_dim=16),
    "gru": partial(LSTMDecoder, embed_dim=8, hidden_dim=16, cell="gru"),
    "transformer": partial(TransformerDecoder, d_model=16, heads=2, ffn_dim=32, layers=2),
}
SIZES = (5, 2, 7)


def _sets(width: int = 16, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, width, generator=generator) for n in SIZES]


@pytest.mark.parametrize("decoder", sorted(DECODERS))
@pytest.mark.parametrize("attention", sorted(ATTENTION))
def test_padding_changes_nothing_for_every_attention_and_decoder(attention, decoder) -> None:
    torch.manual_seed(0)
    built = DECODERS[decoder](vocab_size=13, encoder_dim=16, attention=ATTENTION[attention])
    testing.check_padding(built, _sets())


def test_check_padding_fails_on_a_decoder_that_ignores_the_mask() -> None:
    class Unmasked(LSTMDecoder):
        def init_state(self, regions, mask=None):
            return super().init_state(regions)  # attends to the padding too

    decoder = Unmasked(13, 16, partial(AdditiveAttention, attention_dim=12), 8, 16)
    with pytest.raises(testing.ContractError, match=r"padded regions .* exactly 0"):
        testing.check_padding(decoder, _sets())


def _regions(sets: list[torch.Tensor], boxes: bool = True) -> Regions:
    features, mask = testing.pad_regions(sets)
    generator = torch.Generator().manual_seed(1)
    corners = torch.rand(*features.shape[:2], 2, generator=generator) * 0.5
    box = torch.cat([corners, corners + 0.4], dim=-1) * mask.unsqueeze(-1)
    return Regions(features, mask, box if boxes else None)


def _captioner(box_embed: bool = True) -> Captioner:
    torch.manual_seed(0)
    encoder = RegionEncoder(feature_dim=16, out_dim=12, box_embed=box_embed, dropout=0.0)
    decoder = partial(
        LSTMDecoder, attention=partial(AdditiveAttention, attention_dim=8), embed_dim=8,
        hidden_dim=16,
    )  # fmt: skip
    return Captioner(encoder, decoder, vocab_size=13).eval()


def test_region_encoder_and_captioner_on_a_padded_batch_equal_each_image_alone() -> None:
    captioner = _captioner()
    batch = _regions(_sets())
    tokens = torch.randint(3, 13, (3, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        regions, mask = captioner.encode_masked(batch)
        logits, weights = captioner(batch, tokens)
        assert torch.equal(mask, batch.mask)
        assert not regions[~mask].any()  # the encoder zeroes the padding
        for row, n in enumerate(SIZES):
            alone = batch[row : row + 1]
            alone = Regions(alone.features[:, :n], alone.mask[:, :n], alone.boxes[:, :n])
            own_regions, _ = captioner.encode_masked(alone)
            own_logits, own_weights = captioner(alone, tokens[row : row + 1])
            testing.assert_scaled_close(regions[row, :n], own_regions[0])
            testing.assert_scaled_close(logits[row], own_logits[0])
            testing.assert_scaled_close(weights[row, :, :n], own_weights[0])
            assert not weights[row, :, n:].any()


def test_box_embedding_changes_the_regions_and_needs_boxes() -> None:
    sets = _sets()
    with_boxes = _regions(sets)
    moved = Regions(with_boxes.features, with_boxes.mask, with_boxes.boxes * 0.5)
    captioner = _captioner(box_embed=True)
    with torch.no_grad():
        assert not torch.allclose(captioner.encode(with_boxes), captioner.encode(moved))
        with pytest.raises(ValueError, match="box_embed=true needs region boxes"):
            captioner.encode(_regions(sets, boxes=False))
        plain = _captioner(box_embed=False)
        testing.assert_scaled_close(plain.encode(with_boxes), plain.encode(moved))


def test_region_encoder_refuses_images_and_other_widths() -> None:
    encoder = RegionEncoder(feature_dim=16, out_dim=12)
    with pytest.raises(TypeError, match="reads region features"):
        encoder(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"hold 8-d features, encoder\.feature_dim=16"):
        encoder(_regions(_sets(width=8)))
    with pytest.raises(ValueError, match=r"encoder\.feature_dim is not set"):
        RegionEncoder(feature_dim=None)


def test_scst_sampling_at_top_k_1_on_padded_regions_equals_each_image_alone() -> None:
    decoder = DECODERS["transformer"](vocab_size=13, encoder_dim=16, attention=ATTENTION["dot"])
    decoder.eval()
    sets = _sets()
    padded, mask = testing.pad_regions(sets)
    ids = {"bos_id": 1, "eos_id": 2, "pad_id": 0}
    with torch.no_grad():
        together = sample_captions(decoder, padded, 2, top_k=1, max_len=8, mask=mask, **ids)
        for row, regions in enumerate(sets):
            alone = sample_captions(decoder, regions[None], 2, top_k=1, max_len=8, **ids)
            length = alone.tokens.shape[1]
            assert torch.equal(together.tokens[2 * row : 2 * row + 2, :length], alone.tokens)
            testing.assert_scaled_close(
                together.log_probs[2 * row : 2 * row + 2, :length], alone.log_probs
            )


def test_attention_regulariser_ignores_padded_regions() -> None:
    captioner = _captioner()
    batch = _regions(_sets())
    tokens = torch.randint(3, 13, (3, 6), generator=torch.Generator().manual_seed(2))
    loss = CrossEntropy(pad_id=0, attention_reg=1.0)
    with torch.no_grad():
        together = loss(captioner, batch, tokens)["attention_reg"]
        _, weights = captioner(batch, tokens[:, :-1])
        coverage = weights.sum(dim=1)  # (B, N): every target is a word here
        expected = ((1 - coverage) ** 2)[batch.mask].mean()
    testing.assert_scaled_close(together, expected)


def test_figures_draw_attention_over_boxes() -> None:
    import numpy as np

    from captioning.viz import attention_figure, box_heat

    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    heat = box_heat(torch.tensor([0.7, 0.3, 0.0]), boxes, (8, 8))
    assert heat[0, 0] == pytest.approx(0.7)  # only the first box
    assert heat[3, 3] == pytest.approx(1.0)  # both boxes overlap here
    assert heat[7, 7] == pytest.approx(0.3)  # only the second; the padding adds nothing
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    weights = torch.tensor([[0.7, 0.3, 0.0], [0.1, 0.9, 0.0]])
    sheet = attention_figure(image, ["a", "b"], weights, None, panel=32, columns=3, boxes=boxes)
    assert sheet.size == (96, 50)
    with pytest.raises(ValueError, match="grid or the regions' boxes"):
        attention_figure(image, ["a"], weights[:1], None)
