"""Checks of a run config at start-up, each naming its keys; the typed decoding group."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from captioning.caption import caption_images
from captioning.checks import ConfigError, check_run_config
from captioning.decoding import DecodingConfig
from captioning.eval import evaluate
from captioning.module import CaptioningModule
from captioning.train import run_config, train
from tests.helpers import CONF_DIR, compose_config, compose_train, tiny_shapes_overrides

TRANSFORMER = ["decoder=transformer", "attention=multihead", "decoder.layers=1"]


def _refused(tmp_path: Path, overrides: list[str], message: str) -> None:
    """Training with ``overrides`` stops with ``message`` before any data is generated."""
    cfg = compose_train(tmp_path, [*tiny_shapes_overrides(), *overrides, "trainer.max_epochs=1"])
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert not (tmp_path / "data").exists()


def _passes(tmp_path: Path, overrides: list[str]) -> None:
    check_run_config(run_config(compose_train(tmp_path, overrides)))


def test_decoding_beyond_the_decoders_positions(tmp_path: Path) -> None:
    overrides = [*TRANSFORMER, "decoder.max_len=41", "decoding.max_len=42"]
    _refused(tmp_path, overrides, r"^decoding.max_len=42 is beyond decoder.max_len=41 .*lower "
             r"decoding.max_len to at most 41 or raise decoder.max_len to 42$")  # fmt: skip
    _passes(tmp_path, [*TRANSFORMER, "decoder.max_len=41", "decoding.max_len=41"])
    _passes(tmp_path, ["decoder=lstm", "decoding.max_len=500"])  # no position table
    scst = [*TRANSFORMER, "decoder.max_len=41", "model.objective=scst", "scst.max_len=50"]
    _refused(tmp_path, scst, r"^scst.max_len=50 is beyond decoder.max_len=41")


def test_captions_longer_than_the_decoders_positions(tmp_path: Path) -> None:
    overrides = [*TRANSFORMER, "data.max_caption_len=64"]
    _refused(tmp_path, overrides, r"^data.max_caption_len=64 needs 65 decoder positions .*"
             r"beyond decoder.max_len=64: raise decoder.max_len to 65 or lower "
             r"data.max_caption_len to 63$")  # fmt: skip
    _passes(tmp_path, [*TRANSFORMER, "data.max_caption_len=63"])


def test_after_epoch_with_the_scst_objective(tmp_path: Path) -> None:
    overrides = ["model.objective=scst", "scst.after_epoch=2"]
    _refused(tmp_path, overrides, r"^scst.after_epoch=2 has no effect with model.objective=scst"
             r".*set scst.after_epoch=null .* or model.objective=xe")  # fmt: skip
    _passes(tmp_path, ["model.objective=xe", "scst.after_epoch=2"])
    _passes(tmp_path, ["model.objective=scst"])


def test_a_vit_given_images_of_another_size(tmp_path: Path) -> None:
    overrides = ["encoder=vit_tiny", "encoder.image_size=32"]
    _refused(tmp_path, overrides, r"^encoder.image_size=32 differs from data.image_size=64: "
             r".*set data.image_size=32 or both to the same value$")  # fmt: skip
    _passes(tmp_path, ["encoder=vit_tiny"])  # encoder.image_size follows data.image_size


def _checkpoint(tmp_path: Path, overrides: list[str]) -> Path:
    """An untrained checkpoint of the model ``overrides`` compose (weights_only-readable)."""
    cfg = compose_train(tmp_path / "compose", overrides)
    module = CaptioningModule(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True},
        scheduler=None, loss={}, decoding={"max_len": 30}, config=run_config(cfg),
        vocab=["<pad>", "<bos>", "<eos>", "<unk>", "a"],
    )  # fmt: skip
    path = tmp_path / "model.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return path


def test_eval_and_caption_check_the_checkpoints_positions(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, [*TRANSFORMER, "decoder.max_len=41"])
    message = rf"^decoding.max_len=42 is beyond decoder.max_len=41 of checkpoint {ckpt} .*41$"
    with pytest.raises(ConfigError, match=message):
        evaluate(compose_config("eval", tmp_path, [f"ckpt={ckpt}", "decoding.max_len=42"]))
    overrides = [f"ckpt={ckpt}", f"images={tmp_path}", "decoding.max_len=42"]
    with pytest.raises(ConfigError, match=message):
        caption_images(compose_config("caption", tmp_path, overrides))
    assert not (tmp_path / "data").exists()


def test_eval_checks_a_vits_image_size_against_other_data(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, ["encoder=vit_tiny"])  # built for 64 px
    overrides = [f"ckpt={ckpt}", "data=shapes", "data.image_size=32"]
    with pytest.raises(ConfigError, match=r"^encoder.image_size=64 of checkpoint .* differs from "
                       r"data.image_size=32: .*set data.image_size=64$"):  # fmt: skip
        evaluate(compose_config("eval", tmp_path, overrides))
    assert not (tmp_path / "data").exists()


def _decoding(cfg) -> DecodingConfig:
    return DecodingConfig.of(OmegaConf.to_container(cfg.decoding, resolve=True))


def test_one_decoding_group_for_every_entry_point(tmp_path: Path) -> None:
    keys = {field.name for field in fields(DecodingConfig)}
    options = sorted(p.stem for p in (Path(CONF_DIR) / "decoding").glob("*.yaml"))
    assert options == ["beam", "greedy"]
    greedy = DecodingConfig(beam_size=1, suppress_unk=False)
    beam = DecodingConfig(beam_size=3, suppress_unk=True)
    entry_points = {"train": [], "eval": ["ckpt=x"], "caption": ["ckpt=x", "images=y"]}
    for name, default in (("train", greedy), ("eval", beam), ("caption", beam)):
        assert _decoding(compose_config(name, tmp_path, entry_points[name])) == default
        for option in options:
            cfg = compose_config(name, tmp_path, [*entry_points[name], f"decoding={option}"])
            assert set(cfg.decoding) == keys  # the same keys in every option
        cfg = compose_config(name, tmp_path, [*entry_points[name], "decoding.beam_size=5"])
        assert _decoding(cfg) == replace(default, beam_size=5)
    assert compose_train(tmp_path, ["decoding.max_len=12"]).scst.max_len == 12


def test_bad_decoding_settings_fail_before_any_work(tmp_path: Path) -> None:
    _refused(tmp_path, ["decoding.n_best=2"], r"^decoding.n_best=2 exceeds decoding.beam_size=1")
    _refused(tmp_path, ["decoding.suppress_unk=2"], r"^decoding.suppress_unk must be true or false")
    _refused(
        tmp_path, ["decoding.beam_size=4", "decoding.groups=3"],
        r"^decoding.groups=3 does not divide decoding.beam_size=4",
    )  # fmt: skip
    _refused(tmp_path, ["decoding.sample=true", "decoding.top_p=0"], r"^decoding.top_p must be")
    with pytest.raises(ValueError, match=r"^decoding.beam is not a decoding setting"):
        DecodingConfig.of({"beam": 3})


def test_checkpoints_store_decoding_as_plain_data_and_old_ones_load(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, [])
    stored = torch.load(ckpt, weights_only=True)
    assert type(stored["hyper_parameters"]["decoding"]) is dict
    stored["hyper_parameters"]["decoding"] = {"max_len": 12, "beam_size": 2}  # before n_best
    torch.save(stored, ckpt)
    module = CaptioningModule.from_checkpoint(str(ckpt))
    assert module.decoding_config == DecodingConfig(max_len=12, beam_size=2)
    assert module.decoding == {"max_len": 12, "beam_size": 2}
