"""Every attention x decoder composes and learns end to end (the region decoders Up-Down, AoA
and M²'s meshed one too), every encoder x attention x Show-Attend-Tell / Transformer decoder
composes and learns with the encoder frozen: each through the checks of
``captioning.testing`` that users run on their own components (padding and the refiners:
tests/test_region_models.py). Then what the checks cannot
know: the grouping error, the additive formulas, the sentinel, fine-tuning, ViT sizes, the
transformer cache."""

from functools import partial

import pytest
import torch

from captioning import testing
from captioning.models import (
    AdaptiveAttention,
    AdditiveAttention,
    AoADecoder,
    BilinearAttention,
    Captioner,
    DotAttention,
    LSTMDecoder,
    MeshedDecoder,
    MultiHeadAttention,
    ResNetEncoder,
    SmallCNN,
    TorchvisionCNN,
    TransformerDecoder,
    UpDownDecoder,
    ViTEncoder,
)

V, B, T = 19, 3, 6

ATTENTIONS = {
    "additive": partial(AdditiveAttention, attention_dim=16),
    "dot": partial(DotAttention),
    "scaled_dot": partial(DotAttention, scaled=True),
    "bilinear": partial(BilinearAttention, attention_dim=16),
    "multihead": partial(MultiHeadAttention, attention_dim=16, heads=4),
    "adaptive": partial(AdaptiveAttention, attention_dim=16),
}
DECODERS = {
    "lstm": partial(LSTMDecoder, embed_dim=16, hidden_dim=32, dropout=0.0),
    "gru": partial(LSTMDecoder, embed_dim=16, hidden_dim=32, dropout=0.0, cell="gru"),
    "transformer": partial(
        TransformerDecoder, d_model=32, heads=4, layers=2, ffn_dim=64, dropout=0.0, max_len=16
    ),
}
REGION_DECODERS = {  # in the attention x decoder product only (the encoders' is big enough)
    "updown": partial(UpDownDecoder, embed_dim=16, hidden_dim=32, dropout=0.0),
    "aoa": partial(AoADecoder, embed_dim=16, hidden_dim=32, dropout=0.0),
    "meshed": partial(
        MeshedDecoder, d_model=32, heads=4, layers=2, ffn_dim=64, dropout=0.0, max_len=16
    ),
}
# Up-Down's two stacked LSTMs start at zero: at the checks' lr 3e-3 they need about 40 steps
# to halve the loss of one batch, the others 30
LEARNING = {"updown": {"lr": 1e-2}}
ENCODERS = {  # name: (factory, image side)
    "resnet18": (lambda: ResNetEncoder(depth=18), 64),
    "resnet50_pooled": (lambda: ResNetEncoder(depth=50, grid_size=2), 64),
    "vgg16": (lambda: TorchvisionCNN("vgg16"), 64),
    "convnext_tiny": (lambda: TorchvisionCNN("convnext_tiny"), 64),
    "vit_b_32": (lambda: ViTEncoder("vit_b_32", image_size=64), 64),
    "vit_custom_conv_stem": (
        lambda: ViTEncoder("custom", image_size=32, patch_size=8, width=16, stem="conv"),
        32,
    ),
}


# the region decoders meet every attention module in tests/test_region_models.py (contract,
# beam search and padding checks); here each learns end to end with the two attention kinds
# their papers use, to keep the suite's time
CASES = [(a, d) for d in DECODERS for a in ATTENTIONS] + [
    (a, d) for d in REGION_DECODERS for a in ("additive", "multihead")
]


@pytest.mark.parametrize(("attention", "decoder"), CASES)
def test_every_attention_with_every_decoder(attention: str, decoder: str) -> None:
    # the attention alone (both width cases, grouped hypotheses), then the small CNN + decoder:
    # shapes, teacher forcing == steps, batched beam == per-image beam, and 30 AdamW steps on
    # one fixed batch that cut the loss at least in half, the encoder trained too
    torch.manual_seed(0)
    testing.check_components(
        SmallCNN(channels=(8, 16, 16, 16), grid_size=3),
        ATTENTIONS[attention],
        {**DECODERS, **REGION_DECODERS}[decoder],
        vocab_size=V,
        image_size=24,
        batch=B,
        steps=T,
        **LEARNING.get(decoder, {}),
    )


@pytest.fixture(scope="module")
def encoders() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    """Each torchvision encoder family built once (random weights) with a fixed image batch.

    A freshly initialised network's BatchNorm running statistics are the identity, which blows
    ResNet-50's random features up to a standard deviation of 17 (pretrained weights do not):
    the statistics are set from the batch once, as a pretrained network's would be, which
    brings every family to about 1.
    """
    torch.manual_seed(0)
    built = {}
    for name, (factory, side) in ENCODERS.items():
        module, images = factory(), torch.rand(B, 3, side, side)
        norms = [
            m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        ]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average: after one batch, that batch's statistics
        with torch.no_grad():
            module.train()(images)
        built[name] = (module.eval(), images)
    return built


@pytest.mark.parametrize("decoder", list(DECODERS))
@pytest.mark.parametrize("attention", list(ATTENTIONS))
@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_every_encoder_attention_and_decoder_compose(
    encoders: dict[str, tuple[torch.nn.Module, torch.Tensor]],
    encoder: str,
    attention: str,
    decoder: str,
) -> None:
    # the full cross product: the contract through the real encoder, then 30 steps that cut the
    # loss in half (the encoder frozen: its regions are computed once and passed through, as
    # with data.cache_features; the small CNN above also trains end to end)
    torch.manual_seed(0)
    module, images = encoders[encoder]
    # a recurrent cell's input weights start at +-1/sqrt(hidden): 32 units against ResNet-50's
    # 2048 region channels saturate its gates, so the real encoders get a realistic 256
    width = {"hidden_dim": 256} if decoder != "transformer" else {}
    model = Captioner(
        module, partial(DECODERS[decoder], attention=ATTENTIONS[attention], **width), V
    )
    tokens = torch.randint(1, V, (B, T))
    testing.check_captioner(model, images, tokens, beam_sizes=(), train_encoder=False)


@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_query_rows_that_do_not_group_over_the_memory_rows_fail(attention: str) -> None:
    """(testing.check_attention checks that k rows per memory row equal k copies of it.)"""
    module = ATTENTIONS[attention](query_dim=12, region_dim=16)
    with pytest.raises(ValueError, match="5 query rows do not group over 3 memory rows"):
        module.attend(torch.randn(5, 2, 12), module.prepare(torch.randn(B, 7, 16)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # sigmoid path | tanh path
def test_additive_attentions_equal_their_tanh_formulas(dtype: torch.dtype) -> None:
    """Our scores are Bahdanau's w . tanh(W_r r + W_q q) + b (and Lu et al.'s), either path."""
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    try:
        _check_additive_formulas()
    finally:
        torch.set_default_dtype(torch.float32)


def _check_additive_formulas() -> None:
    query, regions = torch.randn(B, 4, 12) * 3, torch.randn(B, 7, 16) * 3
    additive = AdditiveAttention(query_dim=12, region_dim=16, attention_dim=8)
    hidden = torch.tanh(
        additive.region_proj(regions).unsqueeze(1) + additive.query_proj(query).unsqueeze(2)
    )
    weights = additive.score(hidden).squeeze(-1).softmax(-1)  # (B, T, N)
    context, ours = additive(query, regions)
    torch.testing.assert_close(ours, weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(context, weights @ regions, atol=1e-5, rtol=1e-5)

    adaptive = AdaptiveAttention(query_dim=12, region_dim=16, attention_dim=8)
    sentinel = torch.sigmoid(adaptive.sentinel_gate(query)) * torch.tanh(
        adaptive.sentinel_value(query)
    )
    queried = adaptive.query_proj(query).unsqueeze(2)
    slots = torch.cat([adaptive.region_proj(regions).unsqueeze(1).expand(-1, 4, -1, -1),
                       adaptive.sentinel_proj(sentinel).unsqueeze(2)], dim=2)  # fmt: skip
    shares = adaptive.score(torch.tanh(slots + queried)).squeeze(-1).softmax(-1)  # (B, T, N+1)
    context, ours = adaptive(query, regions)
    beta = shares[..., -1:]
    torch.testing.assert_close(ours, shares[..., :-1] / (1 - beta), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        context, shares[..., :-1] @ regions + beta * sentinel, atol=1e-5, rtol=1e-5
    )


def test_adaptive_attention_reports_the_sentinel_share() -> None:
    attention = AdaptiveAttention(query_dim=8, region_dim=6, attention_dim=8)
    context, weights = attention(torch.randn(2, 5, 8), torch.randn(2, 7, 6))
    assert context.shape == (2, 5, 6) and weights.shape == (2, 5, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5))
    assert attention.sentinel.shape == (2, 5)
    assert ((attention.sentinel > 0) & (attention.sentinel < 1)).all()
    attention.attend(torch.randn(6, 5, 8), attention.prepare(torch.randn(2, 7, 6)))
    assert attention.sentinel.shape == (6, 5)  # one share per query row, grouped or not


def test_finetune_modes_freeze_the_right_blocks() -> None:
    encoder = ResNetEncoder(depth=18, finetune="last_2").train()
    trainable = [any(p.requires_grad for p in block.parameters()) for block in encoder.body]
    assert trainable == [False, False, False, True, True]
    assert not encoder.body[1][0].bn1.training and encoder.body[4][0].bn1.training
    with pytest.raises(ValueError, match=r"encoder.finetune must be all, none or last_N"):
        ResNetEncoder(depth=18, finetune="some")


def test_vit_rejects_images_of_another_size() -> None:
    encoder = ViTEncoder("vit_b_32", image_size=64)
    with pytest.raises(ValueError, match=r"set data.image_size and encoder.image_size"):
        encoder(torch.rand(1, 3, 96, 96))


def test_vit_conv_stem_keeps_the_patch_grid() -> None:
    encoder = ViTEncoder("custom", image_size=64, patch_size=8, width=32, stem="conv")
    assert encoder(torch.rand(2, 3, 64, 64)).shape == (2, 64, 32)
    assert encoder.grid(64, 64) == (8, 8)
    strides = [m.stride for m in encoder.vit.conv_proj if isinstance(m, torch.nn.Conv2d)]
    assert strides == [(2, 2), (2, 2), (2, 2), (1, 1)]  # three halvings: 8 px patches
    with pytest.raises(ValueError, match=r"encoder.stem=conv needs encoder.name=custom"):
        ViTEncoder("vit_b_32", image_size=64, stem="conv")
    with pytest.raises(ValueError, match=r"encoder.stem must be patch or conv"):
        ViTEncoder("custom", image_size=64, stem="hybrid")


def test_transformer_cache_matches_uncached_decoding() -> None:
    torch.manual_seed(0)
    decoder = DECODERS["transformer"](
        vocab_size=V, encoder_dim=16, attention=ATTENTIONS["multihead"]
    ).eval()
    regions = torch.randn(B, 9, 16)
    tokens = torch.randint(1, V, (B, 12))
    state = decoder.init_state(regions)
    with torch.no_grad():
        for t in range(tokens.shape[1]):
            cached, _, state = decoder.step(tokens[:, t], state)
            uncached, _ = decoder(regions, tokens[:, : t + 1])  # the whole prefix again
            testing.assert_scaled_close(cached, uncached[:, -1].log_softmax(-1))
    assert state["keys"][0].shape == (B, 4, 12, 8)  # one cached key per step and head
