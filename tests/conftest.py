"""Shared fixtures: a tiny Shapes set and a tiny trained run, each made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from captioning.data.shapes import ShapesConfig, generate
from tests.helpers import TINY_SHAPES, compose_train, tiny_shapes_overrides

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Shapes data set in the Kaggle Flickr8k layout."""
    root = tmp_path_factory.mktemp("data") / "shapes"
    return generate(root, ShapesConfig(**TINY_SHAPES))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch run on tiny Shapes: its folder holds checkpoints/last.ckpt."""
    from captioning.train import train

    root = tmp_path_factory.mktemp("tiny_run")
    train(compose_train(root, [*tiny_shapes_overrides(), "trainer.max_epochs=1", "samples=0"]))
    return root
