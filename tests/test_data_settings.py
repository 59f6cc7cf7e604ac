"""The DataModule's grouped settings, its generator hook, and old checkpoints' data configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from captioning.data import CaptionDataModule
from captioning.data.datamodule import DataGenerator
from captioning.data.settings import DataSettings, LoaderSettings, SourceSettings
from captioning.data.shapes import ShapesGenerator
from captioning.eval import _with_generator_target
from tests.helpers import compose_train


def test_flat_keys_land_in_their_groups() -> None:
    data = CaptionDataModule(root="r", reader=None, batch_size=8, on_error="skip", min_freq=3)
    assert (data.loader.batch_size, data.source.on_error, data.text.min_freq) == (8, "skip", 3)
    grouped = DataSettings(
        source=SourceSettings(on_error="skip"), loader=LoaderSettings(batch_size=8)
    )
    assert CaptionDataModule(root="r", reader=None, settings=grouped).loader == data.loader


def test_a_misspelt_key_is_named_with_the_known_ones() -> None:
    with pytest.raises(TypeError, match=r"data\.batchsize; the settings are: .*batch_size"):
        CaptionDataModule(root="r", reader=None, batchsize=8)


def test_bad_values_fail_at_construction_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"data.captions_per_image must be one of"):
        LoaderSettings(captions_per_image="most")
    with pytest.raises(Exception, match=r"data.on_error='ignore'"):
        SourceSettings(on_error="ignore")
    assert LoaderSettings(num_workers=0, persistent_workers=True).persistent_workers is False


def test_the_shapes_config_instantiates_a_generator(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_train(tmp_path, ["data.generator.num_train=7"])
    data = instantiate(cfg.data, _convert_="all")
    assert isinstance(data.generator, ShapesGenerator) and isinstance(data.generator, DataGenerator)
    assert data.generator.config.num_train == 7
    assert data.annotation_image_size == data.generator.image_size == 64


def test_a_generator_without_the_hook_is_refused_by_key() -> None:
    with pytest.raises(TypeError, match=r"data.generator: .* give it a _target_"):
        CaptionDataModule(root="r", reader=None, generator={"num_train": 5})


def test_an_old_checkpoints_generator_settings_gain_the_target() -> None:
    old = {"_target_": "captioning.data.CaptionDataModule", "generator": {"num_train": 5}}
    upgraded = _with_generator_target(old)
    assert upgraded.generator._target_ == "captioning.data.shapes.ShapesGenerator"
    assert upgraded.generator.num_train == 5
    assert _with_generator_target(OmegaConf.create({"generator": None})).generator is None
