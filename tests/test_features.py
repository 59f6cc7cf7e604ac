"""The feature cache for frozen encoders: extraction, resumption, keys, workers, training."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from captioning.data import features as features_module
from captioning.data.datamodule import CaptionDataModule
from captioning.data.features import FeatureCache, FeatureCacheError, extract
from captioning.data.layouts import read_dataset
from captioning.models.encoders import ResNetEncoder, SmallCNN
from captioning.train import train
from tests.helpers import compose_train, tiny_shapes_overrides


def _frozen_resnet(**kwargs) -> ResNetEncoder:
    torch.manual_seed(0)
    return ResNetEncoder(depth=18, pretrained=False, finetune="none", **kwargs).eval()


def _module(shapes_dir: Path, tmp_path: Path, **kwargs) -> CaptionDataModule:
    module = CaptionDataModule(
        root=str(shapes_dir),
        reader=partial(read_dataset),
        layout="kaggle",
        image_size=64,
        batch_size=8,
        eval_batch_size=16,
        cache_dir=str(tmp_path / "cache"),
        cache=False,
        **kwargs,
    )
    module.setup()
    return module


def test_extraction_resumes_where_it_stopped(shapes_dir: Path, tmp_path: Path, monkeypatch):
    paths = sorted((shapes_dir / "Images").iterdir())[:40]
    encoder = _frozen_resnet()
    full = tmp_path / "full.npy"
    extract(encoder, paths, 64, full, torch.device("cpu"), batch_size=16)
    reference = np.load(full)
    assert reference.dtype == np.float16 and reference.shape == (40, 4, 512)  # 2x2 regions

    calls = []
    original = features_module.load_images

    def interrupted(batch, size):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the second batch
        return original(batch, size)

    partial_out = tmp_path / "partial.npy"
    monkeypatch.setattr(features_module, "load_images", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(encoder, paths, 64, partial_out, torch.device("cpu"), batch_size=16)
    assert partial_out.with_suffix(".done").read_text() == "16"
    monkeypatch.setattr(features_module, "load_images", original)
    seen = []
    monkeypatch.setattr(
        features_module, "load_images", lambda b, s: seen.append(len(b)) or original(b, s)
    )
    extract(encoder, paths, 64, partial_out, torch.device("cpu"), batch_size=16)
    assert seen == [16, 8]  # only the images not written before
    np.testing.assert_array_equal(np.load(partial_out), reference)


def test_trainable_encoder_is_refused(shapes_dir: Path, tmp_path: Path) -> None:
    data = _module(shapes_dir, tmp_path)
    with pytest.raises(FeatureCacheError, match=r"needs a frozen encoder.*encoder.finetune=none"):
        data.use_feature_cache(SmallCNN(), {"name": "small_cnn"}, torch.device("cpu"))


def test_key_changes_with_the_encoder(shapes_dir: Path, tmp_path: Path) -> None:
    paths = {"train": sorted((shapes_dir / "Images").iterdir())[:4]}
    folder = tmp_path / "cache"
    base = FeatureCache(folder, _frozen_resnet(), {"depth": 18}, 64, paths).folder
    assert FeatureCache(folder, _frozen_resnet(), {"depth": 18}, 64, paths).folder == base
    assert FeatureCache(folder, _frozen_resnet(), {"depth": 18, "x": 1}, 64, paths).folder != base
    assert (
        FeatureCache(folder, _frozen_resnet(grid_size=1), {"depth": 18}, 64, paths).folder != base
    )
    other_weights = _frozen_resnet()
    with torch.no_grad():
        next(other_weights.parameters()).add_(1.0)
    assert FeatureCache(folder, other_weights, {"depth": 18}, 64, paths).folder != base
    assert FeatureCache(folder, _frozen_resnet(), {"depth": 18}, 32, paths).folder != base


def test_cached_batches_equal_the_encoder_output_with_workers(shapes_dir: Path, tmp_path: Path):
    data = _module(shapes_dir, tmp_path, num_workers=2, persistent_workers=False)
    encoder = _frozen_resnet()
    pixels = next(iter(data.val_dataloader()))
    data.use_feature_cache(encoder, {"depth": 18}, torch.device("cpu"))
    batch = next(iter(data.val_dataloader()))  # two workers read the memory map
    assert batch["images"].shape == (16, 4, 512) and batch["images"].dtype == torch.float16
    assert torch.equal(batch["indices"], pixels["indices"])
    with torch.no_grad():
        expected = encoder(pixels["images"].float() / 255)
    torch.testing.assert_close(batch["images"].float(), expected, atol=2e-2, rtol=1e-2)
    pairs = next(iter(data.val_dataloader().batch_sampler))
    in_process = torch.stack([data.datasets["val"][pair][0] for pair in pairs])
    assert torch.equal(in_process, batch["images"])


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_training_on_cached_features(tmp_path: Path) -> None:
    overrides = [
        *tiny_shapes_overrides(),
        "encoder=resnet18",
        "encoder.finetune=none",
        "data.cache_features=true",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=1",
        "samples=0",
        "logger=csv",
    ]
    metrics = train(compose_train(tmp_path, overrides))
    folders = list((tmp_path / "cache").glob("features-*"))
    assert len(folders) == 1
    sizes = {split: np.load(folders[0] / f"{split}.npy", mmap_mode="r").shape for split in
             ("train", "val", "test")}  # fmt: skip
    assert sizes == {"train": (96, 4, 512), "val": (16, 4, 512), "test": (16, 4, 512)}
    scores = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert scores["CIDEr-D"] == pytest.approx(metrics["test/CIDEr-D"])
