"""The three component contracts, teacher forcing vs incremental steps, gradients."""

from functools import partial

import pytest
import torch

from captioning.decoding import greedy_decode
from captioning.models import AdditiveAttention, Captioner, LSTMDecoder, ResNetEncoder, SmallCNN
from captioning.models.encoders import load_torchvision_model
from tests.conftest import assert_scaled_close

V, B, T = 23, 3, 7


def _captioner(encoder: torch.nn.Module) -> Captioner:
    decoder = partial(
        LSTMDecoder,
        attention=partial(AdditiveAttention, attention_dim=16),
        embed_dim=12,
        hidden_dim=24,
    )
    return Captioner(encoder, decoder, vocab_size=V).eval()


ENCODERS = {
    "small_cnn": (lambda: SmallCNN(channels=(8, 16, 16, 24), grid_size=4), 32, 16),
    "resnet18": (lambda: ResNetEncoder(depth=18), 64, 4),
    "resnet18_pooled": (lambda: ResNetEncoder(depth=18, grid_size=3), 64, 9),
}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoder_contract(name: str) -> None:
    make, size, regions = ENCODERS[name]
    encoder = make().eval()
    out = encoder(torch.rand(B, 3, size, size))
    assert out.shape == (B, regions, encoder.out_dim)
    h, w = encoder.grid(size, size)
    assert h * w == regions


def test_resnet_grid_matches_feature_map_for_odd_sizes() -> None:
    encoder = ResNetEncoder(depth=18).eval()
    for height, width in ((224, 224), (97, 130)):
        h, w = encoder.grid(height, width)
        assert encoder(torch.rand(1, 3, height, width)).shape[1] == h * w


def _receptive_centre(encoder: SmallCNN, size: int, region: int) -> tuple[float, float]:
    """(x, y) centroid of d region / d pixel with positive weights and activations: where it looks."""
    with torch.no_grad():
        for conv in encoder.features[0::3]:
            conv.weight.fill_(1.0)
    images = torch.ones(1, 3, size, size, requires_grad=True)  # every activation stays > 0
    encoder.eval()(images)[0, region].sum().backward()
    grad = images.grad.abs().sum(dim=(0, 1))  # (H, W)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    total = grad.sum()
    return float((grad * xs).sum() / total), float((grad * ys).sum() / total)


@pytest.mark.parametrize(("kernel", "offset"), [(4, 0.0), (3, -3.5)])
def test_small_cnn_regions_sit_on_their_grid_cells(kernel: int, offset: float) -> None:
    encoder = SmallCNN(channels=(4, 4, 4, 4), grid_size=8, position_embedding=False,
                       kernel_size=kernel)  # fmt: skip
    cell = 64 // 8
    row, column = 3, 4  # an interior region: its receptive field is not clipped by padding
    x, y = _receptive_centre(encoder, 64, row * 8 + column)
    # cell (row, column) covers pixels [8c, 8c + 8): its centre is 8c + 3.5
    assert x == pytest.approx(column * cell + 3.5 + offset, abs=1e-3)
    assert y == pytest.approx(row * cell + 3.5 + offset, abs=1e-3)


def test_frozen_resnet_keeps_batchnorm_in_eval() -> None:
    encoder = ResNetEncoder(depth=18, finetune="none").train()
    assert not any(p.requires_grad for p in encoder.parameters())
    assert all(
        not m.training for m in encoder.body.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )


def test_attention_contract_rows_sum_to_one() -> None:
    attention = AdditiveAttention(query_dim=10, region_dim=6, attention_dim=8)
    context, weights = attention(torch.randn(B, T, 10), torch.randn(B, 5, 6))
    assert context.shape == (B, T, 6) and weights.shape == (B, T, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, T))
    assert (weights >= 0).all()


@pytest.mark.parametrize("name", list(ENCODERS))
def test_teacher_forcing_equals_incremental_steps(name: str) -> None:
    torch.manual_seed(0)
    make, size, regions_n = ENCODERS[name]
    model = _captioner(make())
    images = torch.rand(B, 3, size, size)
    tokens = torch.randint(0, V, (B, T))
    with torch.no_grad():
        logits, weights = model(images, tokens)
        assert logits.shape == (B, T, V) and weights.shape == (B, T, regions_n)
        torch.testing.assert_close(weights.sum(-1), torch.ones(B, T))
        regions = model.encode(images)
        state = model.decoder.init_state(regions)
        for t in range(T):
            logprobs, step_weights, state = model.decoder.step(tokens[:, t], state)
            assert_scaled_close(logprobs, logits[:, t].log_softmax(-1))
            assert_scaled_close(step_weights, weights[:, t])


def test_state_index_select_reorders_hypotheses() -> None:
    model = _captioner(ENCODERS["small_cnn"][0]())
    regions = model.encode(torch.rand(B, 3, 32, 32))
    state = model.decoder.init_state(regions)
    index = torch.tensor([2, 2, 0])
    picked = state.index_select(index)
    torch.testing.assert_close(picked["h"], state["h"][index])
    torch.testing.assert_close(
        picked["memory"]["doubled_keys"], state["memory"]["doubled_keys"][index]
    )
    tokens = torch.tensor([1, 1, 1])
    a, _, _ = model.decoder.step(tokens, picked)
    b, _, _ = model.decoder.step(tokens, state)
    torch.testing.assert_close(a, b[index])


def test_every_parameter_receives_a_gradient() -> None:
    model = _captioner(ENCODERS["small_cnn"][0]()).train()
    logits, _ = model(torch.rand(B, 3, 32, 32), torch.randint(1, V, (B, T)))
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_greedy_decoding_stops_at_eos_and_pads_after() -> None:
    torch.manual_seed(0)
    model = _captioner(ENCODERS["small_cnn"][0]())
    regions = model.encode(torch.rand(B, 3, 32, 32))
    eos = 2
    with torch.no_grad():  # make <eos> the most likely word from step 3 on, for every image
        model.decoder.classifier.bias[eos] = -1e4
    tokens, weights = greedy_decode(
        model.decoder, regions, bos_id=1, eos_id=eos, pad_id=0, max_len=5
    )
    assert tokens.shape == (B, 5) and weights.shape == (B, 5, 16)
    assert not (tokens == eos).any()  # never finished: runs to max_len without crashing
    with torch.no_grad():
        model.decoder.classifier.bias[eos] = 1e4
    tokens, _ = greedy_decode(model.decoder, regions, bos_id=1, eos_id=eos, pad_id=0, max_len=5)
    assert tokens.shape == (B, 1) and (tokens == eos).all()


def test_pretrained_without_network_fails_with_instructions(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr("torch.hub.load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", "/nonexistent/torch")
    with pytest.raises(
        RuntimeError,
        match=r"/nonexistent/torch/hub/checkpoints/resnet18-.*\.pth.*encoder.pretrained=false",
    ):
        load_torchvision_model("resnet18", pretrained=True)
