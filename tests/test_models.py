"""Encoders, the decoder state and gradients beyond what ``captioning.testing`` checks.

The contract itself (encoder shapes and grid, attention rows summing to 1, teacher forcing
equal to ``step``) is checked for every encoder x attention x decoder in test_components.py.
"""

from functools import partial

import pytest
import torch

from captioning import testing
from captioning.decoding import greedy_decode
from captioning.models import AdditiveAttention, Captioner, LSTMDecoder, ResNetEncoder, SmallCNN
from captioning.models.encoders import load_torchvision_model

V, B, T = 23, 3, 7


def _captioner(encoder: torch.nn.Module) -> Captioner:
    decoder = partial(
        LSTMDecoder,
        attention=partial(AdditiveAttention, attention_dim=16),
        embed_dim=12,
        hidden_dim=24,
    )
    return Captioner(encoder, decoder, vocab_size=V).eval()


def _small_cnn() -> SmallCNN:
    return SmallCNN(channels=(8, 16, 16, 24), grid_size=4)  # 16 regions


def test_resnet_grid_matches_feature_map_for_odd_sizes() -> None:
    encoder = ResNetEncoder(depth=18)
    for size in ((224, 224), (97, 130)):
        testing.check_encoder(encoder, size, batch=1)  # grid(H, W) cells == regions


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


def test_state_index_select_reorders_hypotheses() -> None:
    model = _captioner(_small_cnn())
    regions = model.encode(torch.rand(B, 3, 32, 32))
    state = model.decoder.init_state(regions)
    index = torch.tensor([2, 2, 0])
    picked = state.index_select(index)
    torch.testing.assert_close(picked["h"], state["h"][index])
    torch.testing.assert_close(
        picked["memory"]["doubled_keys"], state["memory"]["doubled_keys"][index]
    )
    # (a step on the re-indexed state equals those rows of a step on the original:
    # testing.check_decoder, for every decoder)


def test_every_parameter_receives_a_gradient() -> None:
    model = _captioner(_small_cnn()).train()
    logits, _ = model(torch.rand(B, 3, 32, 32), torch.randint(1, V, (B, T)))
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_greedy_decoding_stops_at_eos_and_pads_after() -> None:
    torch.manual_seed(0)
    model = _captioner(_small_cnn())
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
