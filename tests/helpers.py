"""Helpers the tests share: Hydra config composition as the entry points do it, a bare
module."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
TINY_SHAPES = {"num_train": 96, "num_val": 16, "num_test": 16}


def compose_train(tmp_path: Path, overrides: list[str]) -> DictConfig:
    """The train config as ``python -m captioning.train`` would build it, writing under tmp."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            return_hydra_config=True,
            overrides=[
                f"paths.root_dir={tmp_path}",
                f"hydra.run.dir={tmp_path}/run",
                # the W&B default costs a background process per run: tests that are not
                # about W&B log to CSV
                *([] if any(o.startswith("logger=") for o in overrides) else ["logger=csv"]),
                *overrides,
            ],
        )
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


def tiny_shapes_overrides() -> list[str]:
    return [f"data.generator.{k}={v}" for k, v in TINY_SHAPES.items()]


def bare_module(decoding: dict | None = None):
    """A CaptioningModule of the default Shapes model, with no data, trainer or scheduler."""
    from captioning.module import CaptioningModule

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        model = OmegaConf.to_container(compose(config_name="train").model, resolve=True)
    return CaptioningModule(
        model=model,
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True},
        scheduler=None,
        loss={},
        decoding=decoding or {},
        vocab=["<pad>", "<bos>", "<eos>", "<unk>", "a"],
    )


def compose_config(
    name: str, tmp_path: Path, overrides: list[str], config_dir: str = CONF_DIR
) -> DictConfig:
    """Any entry point's config (eval, caption; bench from ``benchmarks.CONFIG_DIR``) with its
    outputs under ``tmp_path/name``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose(
            config_name=name,
            return_hydra_config=True,
            overrides=[f"paths.root_dir={tmp_path}", *overrides],
        )
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / name)
    return cfg
