"""timm models and CLIP image towers as encoders, with random weights (nothing downloaded)."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import open_clip
import pytest
import safetensors.torch
import timm
import timm.data
import torch

from captioning import testing
from captioning.checks import check_encoder_input
from captioning.models import Captioner, LSTMDecoder, OpenCLIPEncoder, TimmEncoder
from captioning.models.attention import AdditiveAttention
from captioning.models.backbones import cnn_stages
from captioning.models.encoders import weights_from_checkpoint
from captioning.module import CaptioningModule
from captioning.train import train
from tests.helpers import compose_train, tiny_shapes_overrides

# name -> (image side, regions it gives): a ResNet, a ConvNeXt, an EfficientNet (last maps at
# stride 32) and a ViT (16 px patches, class token dropped)
TIMM = {
    "resnet18": (64, 4),
    "convnext_atto": (64, 4),
    "efficientnet_b0": (64, 4),
    "vit_tiny_patch16_224": (64, 16),
}
CLIP = {"RN50": (64, 4), "ViT-B-32": (64, 4)}


@pytest.mark.parametrize("name", list(TIMM))
def test_timm_models_honour_the_encoder_contract(name: str) -> None:
    side, regions = TIMM[name]
    encoder = TimmEncoder(name, image_size=side)
    out = testing.check_encoder(encoder, side)  # shapes, finite, grid h * w == N
    assert out.shape[1] == regions == encoder.grid(side, side)[0] * encoder.grid(side, side)[1]
    # the normalisation is the model's own pretrained configuration, not a table of ours
    config = timm.data.resolve_data_config({}, model=timm.create_model(name, num_classes=0))
    assert encoder.mean.flatten().tolist() == pytest.approx(list(config["mean"]))
    assert encoder.std.flatten().tolist() == pytest.approx(list(config["std"]))


def test_a_vits_regions_are_its_patch_tokens_without_the_prefix() -> None:
    encoder = TimmEncoder("vit_tiny_patch16_224", image_size=64).eval()
    images = torch.rand(2, 3, 64, 64)
    tokens = encoder.model.forward_features(encoder.normalise(images))  # (B, 1 + 16, D)
    assert torch.equal(encoder(images), tokens[:, 1:])
    with pytest.raises(ValueError, match=r"set encoder.image_size to data.image_size"):
        encoder(torch.rand(1, 3, 96, 96))


def test_a_cnns_grid_pools_to_grid_size_and_follows_the_image() -> None:
    encoder = TimmEncoder("resnet18")
    assert encoder.grid(96, 160) == (3, 5)
    assert testing.check_encoder(encoder, (96, 160)).shape[1] == 15
    pooled = TimmEncoder("resnet18", grid_size=3)
    assert testing.check_encoder(pooled, 64).shape[1] == 9 and pooled.grid(64, 64) == (3, 3)


@pytest.mark.parametrize("name", list(CLIP))
def test_clip_towers_honour_the_encoder_contract(name: str) -> None:
    side, regions = CLIP[name]
    encoder = OpenCLIPEncoder(name, image_size=side)
    assert testing.check_encoder(encoder, side).shape[1] == regions
    assert encoder.mean.flatten().tolist() == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert encoder.std.flatten().tolist() == pytest.approx(open_clip.OPENAI_DATASET_STD)


def test_a_clip_vits_regions_are_its_normalised_patch_tokens() -> None:
    encoder = OpenCLIPEncoder("ViT-B-32", image_size=64).eval()
    images = torch.rand(2, 3, 64, 64)
    visual = encoder.visual
    x = visual.transformer(visual._embeds(encoder.normalise(images)))  # (B, 1 + N, D)
    torch.testing.assert_close(encoder(images), visual.ln_post(x)[:, 1:])


@pytest.mark.parametrize(
    "make",
    [partial(TimmEncoder, "resnet18"), partial(TimmEncoder, "vit_tiny_patch16_224", image_size=64),
     partial(TimmEncoder, "vit_base_patch16_clip_224", image_size=64),  # a pre-norm, outside blocks
     partial(OpenCLIPEncoder, "RN50", image_size=64), partial(OpenCLIPEncoder, "ViT-B-32", image_size=64)],
    ids=["timm-cnn", "timm-vit", "timm-clip-vit", "clip-resnet", "clip-vit"],
)  # fmt: skip
def test_finetune_none_freezes_every_parameter(make) -> None:
    frozen = make(finetune="none").train()
    assert [n for n, p in frozen.named_parameters() if p.requires_grad] == []
    assert not any(m.training for m in frozen.modules() if isinstance(m, torch.nn.BatchNorm2d))


def _trainable(module: torch.nn.Module) -> set[int]:
    return {id(p) for p in module.parameters() if p.requires_grad}


def test_last_n_counts_stages_and_blocks() -> None:
    # EfficientNet's seven stages sit in one `blocks` sequence: last_1 is the last of them
    effnet = TimmEncoder("efficientnet_b0", finetune="last_1")
    stages = cnn_stages(effnet.model)
    assert len(stages) == 1 + 7  # the stem, then the stages
    assert _trainable(effnet) == {id(p) for p in effnet.model.blocks[-1].parameters()}
    resnet = TimmEncoder("resnet18", finetune="last_2")  # layer3 and layer4, as torchvision's
    layers = [*resnet.model.layer3.parameters(), *resnet.model.layer4.parameters()]
    assert _trainable(resnet) == {id(p) for p in layers}
    vit = TimmEncoder("vit_tiny_patch16_224", image_size=64, finetune="last_1")
    last = [*vit.model.blocks[-1].parameters(), *vit.model.norm.parameters()]
    assert _trainable(vit) == {id(p) for p in last}  # the last block with the final norm
    clip = OpenCLIPEncoder("ViT-B-32", image_size=64, finetune="last_1")
    visual = clip.visual
    last = [*visual.transformer.resblocks[-1].parameters(), *visual.ln_post.parameters()]
    assert _trainable(clip) == {id(p) for p in last}


@pytest.mark.parametrize(
    ("name", "side", "prefix"),
    [("deit_tiny_distilled_patch16_224", 64, 2), ("vit_small_patch14_reg4_dinov2", 56, 5),
     ("vit_tiny_r_s16_p8_224", 224, 1)],
    ids=["distillation-token", "register-tokens", "hybrid-resnet-stem"],
)  # fmt: skip
def test_every_prefix_token_is_dropped_and_the_grid_is_the_patch_layout(
    name: str, side: int, prefix: int
) -> None:
    encoder = TimmEncoder(name, image_size=side).eval()
    images = torch.rand(1, 3, side, side)
    tokens = encoder.model.forward_features(encoder.normalise(images))
    assert encoder.prefix == prefix
    assert torch.equal(testing.check_encoder(encoder, images=images), tokens[:, prefix:])
    height, width = encoder.grid(side, side)
    assert height * width == tokens.shape[1] - prefix


def test_other_token_models_and_any_size_swin_are_served_as_maps() -> None:
    for name, side in [("xcit_nano_12_p16_224", 224), ("swin_tiny_patch4_window7_224", 64)]:
        encoder = TimmEncoder(name, image_size=side)
        assert not encoder.tokens
        check_encoder_input(encoder, side)  # h x w == N, or a ConfigError


def test_clip_resnet_grid_follows_any_image_size() -> None:
    encoder = OpenCLIPEncoder("RN50", image_size=100)
    assert testing.check_encoder(encoder, 100).shape[1] == 9 and encoder.grid(100, 100) == (3, 3)


def test_openai_clip_weights_build_the_tower_with_quick_gelu() -> None:
    with weights_from_checkpoint():  # the architecture of the tag, without its weights
        tower = OpenCLIPEncoder("ViT-B-32", pretrained="openai", image_size=64).visual
    assert isinstance(tower.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    plain = OpenCLIPEncoder("ViT-B-32", image_size=64).visual
    assert not isinstance(plain.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


def test_clip_towers_built_from_timm_are_refused_with_the_way_out() -> None:
    for name in ("convnext_base", "ViT-B-16-SigLIP", "coca_ViT-B-32"):
        with pytest.raises(ValueError, match=r"takes OpenAI-style CLIP towers .* use encoder=timm"):
            OpenCLIPEncoder(name)


def test_a_captioner_on_a_timm_encoder_learns() -> None:
    torch.manual_seed(0)
    encoder = TimmEncoder("resnet18", finetune="none", grid_size=2)
    decoder = partial(LSTMDecoder, attention=partial(AdditiveAttention), hidden_dim=64)
    model = Captioner(encoder, decoder, 12)
    tokens = torch.randint(1, 12, (2, 5))
    testing.check_captioner(model, torch.rand(2, 3, 64, 64), tokens, beam_sizes=(2,))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No network and an empty Hugging Face cache: what this machine and CI have."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_timm_pretrained_without_the_weights_says_where_to_put_them(offline: Path) -> None:
    with pytest.raises(RuntimeError) as error:
        TimmEncoder("resnet18", pretrained=True)
    message = str(error.value)
    assert "pretrained weights of timm model resnet18" in message
    assert str(offline) in message and "huggingface-cli download timm/resnet18" in message
    assert "encoder.pretrained=false" in message


def test_timm_pretrained_weights_load_from_the_local_cache(offline: Path, caplog) -> None:
    # the Hugging Face cache layout a download leaves: refs/main -> snapshots/<rev>/<file>
    full = timm.create_model("resnet18")
    repo = full.pretrained_cfg["hf_hub_id"]
    folder = offline / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("a" * 40)
    (folder / "snapshots" / ("a" * 40)).mkdir(parents=True)
    state = {k: v.contiguous() for k, v in full.state_dict().items()}
    safetensors.torch.save_file(state, str(folder / "snapshots" / ("a" * 40) / "model.safetensors"))
    with caplog.at_level(logging.INFO, logger="captioning.models.hub"):
        encoder = TimmEncoder("resnet18", pretrained=True, image_size=64)
    assert torch.equal(encoder.model.layer4[1].conv2.weight, full.layer4[1].conv2.weight)
    # the side and filter the weights were trained with are the data's: said, not hidden
    side = full.pretrained_cfg["input_size"][-1]
    assert f"trained on {side} px images; data.image_size=64" in caplog.text
    assert full.pretrained_cfg["interpolation"] == "bicubic"
    assert "trained on bicubic-resized images; the loader resizes bilinearly" in caplog.text


def test_clip_pretrained_without_the_weights_says_where_to_put_them(offline: Path) -> None:
    with pytest.raises(RuntimeError) as error:
        OpenCLIPEncoder("ViT-B-32", pretrained="laion2b_s34b_b79k")
    message = str(error.value)
    assert "pretrained weights of open_clip ViT-B-32 (laion2b_s34b_b79k)" in message
    assert str(offline) in message and "encoder.pretrained=false" in message
    with pytest.raises(ValueError, match=r"a weights tag, e.g."):
        OpenCLIPEncoder("ViT-B-32", pretrained=True)


def test_unknown_names_list_real_ones() -> None:
    with pytest.raises(ValueError, match=r"encoder.name='resnet_nope' is not a timm model"):
        TimmEncoder("resnet_nope")
    with pytest.raises(ValueError, match=r"encoder.name='ViT-Q' is not an open_clip model"):
        OpenCLIPEncoder("ViT-Q")


def _fast_dev_run(tmp_path: Path, *overrides: str) -> dict[str, float]:
    cfg = compose_train(
        tmp_path,
        [*tiny_shapes_overrides(), "trainer.fast_dev_run=true", "logger=csv", "samples=0",
         *overrides],
    )  # fmt: skip
    return train(cfg)


@pytest.mark.slow  # end-to-end runs: make test-fast leaves them out
@pytest.mark.parametrize(
    "overrides",
    [["encoder=timm", "encoder.name=resnet18", "encoder.pretrained=false"],
     ["encoder=timm", "encoder.name=vit_tiny_patch16_224", "encoder.pretrained=false",
      "data.image_size=224"],
     ["encoder=open_clip", "encoder.name=ViT-B-32", "encoder.pretrained=false"]],
    ids=["timm-resnet18", "timm-vit-tiny-224", "clip-vit-b-32"],
)  # fmt: skip
def test_the_documented_commands_train(tmp_path: Path, overrides: list[str]) -> None:
    metrics = _fast_dev_run(tmp_path, *overrides)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


@pytest.mark.slow
def test_a_frozen_timm_encoder_trains_on_cached_features(tmp_path: Path) -> None:
    _fast_dev_run(
        tmp_path, "encoder=timm", "encoder.name=resnet18", "encoder.finetune=none",
        "data.cache_features=true",
    )  # fmt: skip
    (folder,) = (tmp_path / "data").rglob("features-*")  # one extraction, by the timm ResNet
    train_features = np.load(folder / "train.npy", mmap_mode="r")
    assert train_features.shape == (96, 4, 512)  # 96 images x 2x2 regions x resnet18's width


@pytest.mark.slow
def test_a_checkpoint_of_pretrained_weights_reloads_without_them(tmp_path: Path, offline) -> None:
    # trained with random weights; recorded as pretrained (as a real run would be): eval,
    # caption and init_from rebuild it from the checkpoint alone, with no weights cache
    cfg = compose_train(
        tmp_path,
        [*tiny_shapes_overrides(), "trainer.max_epochs=1", "logger=csv", "samples=0",
         "test=false", "encoder=timm", "encoder.name=resnet18", "encoder.grid_size=2"],
    )  # fmt: skip
    train(cfg)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["model"]["encoder"]["pretrained"] = True
    torch.save(checkpoint, path)
    module = CaptioningModule.from_checkpoint(str(path))
    saved = checkpoint["state_dict"]["captioner.encoder.model.layer4.1.conv2.weight"]
    assert torch.equal(module.captioner.encoder.model.layer4[1].conv2.weight, saved)


def test_channels_last_gives_the_same_regions() -> None:
    # train.py's channels_last=true converts the whole module; the encoders must not depend
    # on the memory layout of their weights or input
    for encoder in (TimmEncoder("resnet18"), OpenCLIPEncoder("RN50", image_size=64)):
        encoder.eval()
        images = torch.rand(2, 3, 64, 64)
        expected = encoder(images)
        encoder = encoder.to(memory_format=torch.channels_last)
        channels_last = encoder(images.contiguous(memory_format=torch.channels_last))
        # another convolution algorithm sums in another order: float32 rounding, scaled
        testing.assert_scaled_close(channels_last, expected, rtol=1e-4)
