"""How the entry points connect a CaptionDataModule to a CaptioningModule.

The module never reads the DataModule: ``train`` and ``eval`` hand it the references (and
Shapes' objects) its metrics score against, build the SCST reward from the training
references, and give the trainer the callback that serves a frozen encoder's cached
features.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import lightning as L

from captioning.data.datamodule import CaptionDataModule
from captioning.module import CaptioningModule
from captioning.scst import CaptionReward, cached_frequencies


def attach_references(
    module: CaptioningModule,
    datamodule: CaptionDataModule,
    splits: Iterable[str],
    metrics: Mapping[str, Any] | None = None,
    spice_splits: Collection[str] = ("test",),
) -> None:
    """Give the module each split's references and objects (set up ``datamodule`` first),
    the training captions (for ``novel``) and the ``metrics`` settings (``meteor_backend``;
    ``spice`` applies to ``spice_splits`` only: Java SPICE is too slow for every validation)."""
    metrics = metrics or {}
    training = frozenset(
        {caption for captions in datamodule.references("train").values() for caption in captions}
    )  # one set for every split's metric
    for split in splits:
        module.attach_references(
            split,
            datamodule.references(split),
            datamodule.objects(split),
            image_size=datamodule.image_size,
            annotation_size=datamodule.annotation_image_size,
            training_captions=training,
            meteor=str(metrics.get("meteor_backend", "python")),
            spice=bool(metrics.get("spice", False)) and split in spice_splits,
        )


def scst_reward(datamodule: CaptionDataModule, settings: Mapping[str, Any]) -> CaptionReward:
    """The SCST reward over the training references, with their CIDEr-D document frequencies
    cached beside the data (``scst.w_cider``, ``scst.w_bleu`` weigh the two metrics)."""
    references = datamodule.references("train")
    return CaptionReward(
        references,
        cached_frequencies(references, datamodule.cache_folder, datamodule.fingerprint),
        w_cider=float(settings.get("w_cider", 1.0)),
        w_bleu=float(settings.get("w_bleu", 0.0)),
    )


class CachedFeatures(L.Callback):
    """With ``data.cache_features``: at set-up, extract the module's frozen encoder's region
    features once (on global rank 0, resumably; the other ranks wait) and serve them instead
    of images. It runs in ``setup`` because only then are the device and the ranks known."""

    def __init__(self, datamodule: CaptionDataModule) -> None:
        self.datamodule = datamodule

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.datamodule.use_feature_cache(
            pl_module.captioner.encoder,
            pl_module.hparams.model.get("encoder", {}),
            trainer.strategy.root_device,
            is_main=trainer.is_global_zero,
            barrier=trainer.strategy.barrier,
        )


def data_callbacks(datamodule: CaptionDataModule) -> list[L.Callback]:
    """The callbacks the data asks of the trainer."""
    return [CachedFeatures(datamodule)] if datamodule.caching.cache_features else []
