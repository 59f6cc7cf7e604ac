"""Models for the benchmarks, composed from the installed config tree as training composes them."""

from __future__ import annotations

from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from captioning import CONFIG_DIR
from captioning.models import Captioner

VOCAB, LENGTH, IMAGE = 41, 18, 64  # the default Shapes data's vocabulary, caption and image sizes


def train_config(*overrides: str) -> DictConfig:
    """``captioning.train``'s config with ``overrides``, from ``captioning.CONFIG_DIR``.

    Composed in a Hydra context of its own: inside ``python -m benchmarks`` the running app's
    search path is bench.yaml's, on which compose cannot find ``train``.
    """
    outer = get_gh_backup()  # the running app's Hydra, if any, comes back afterwards
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))
    finally:
        restore_gh_from_backup(outer)


def node(cfg: DictConfig, key: str) -> dict[str, Any]:
    """A config node as a plain, resolved dict."""
    return OmegaConf.to_container(cfg[key], resolve=True)


def model_config(*overrides: str) -> dict[str, Any]:
    """The Captioner's config: the ``model`` node without the training ``objective``."""
    model = node(train_config(*overrides), "model")
    model.pop("objective", None)
    return model


def shapes_model() -> Captioner:
    """The default ``make train`` model (small CNN, additive attention, LSTM), untrained."""
    return instantiate(model_config(), vocab_size=VOCAB, pad_id=0)
