"""The importable extraction: images (and, for ``detector=boxes``, their boxes) in, region
features out. ``python -m captioning.extract`` runs it over a data set; ``captioning-caption``
rebuilds it from a checkpoint's settings to caption a raw photo."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from hydra.utils import instantiate
from torchvision.transforms.v2 import functional as F

from captioning.checkpoint import read_checkpoint
from captioning.data.features import weights_digest
from captioning.data.images import load_image
from captioning.extract.detectors import (
    Detections,
    TorchvisionDetector,
    build_detector,
    image_rng,
    oracle_regions,
)
from captioning.extract.pooling import feature_map, pool_regions
from captioning.extract.settings import VERSION, WRITER, ExtractSettings
from captioning.models.encoders import weights_from_checkpoint

log = logging.getLogger(__name__)

NOT_SETTINGS = ("writer", "version", "encoder", "weights", "categories")  # what else it holds


@dataclass
class Regions:
    """One image's regions: ``feat (N, D)``, ``boxes (N, 4)`` x1, y1, x2, y2 in the original
    image's pixels, ``scores (N,)``, ``labels (N,)`` (the detector's class; for oracle boxes
    the object's index in the boxes file, -1 for a distractor) and the original size."""

    feat: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    image_w: int
    image_h: int

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of a region file (``<key>.npz``)."""
        return {
            "feat": self.feat,
            "boxes": self.boxes,
            "image_w": np.asarray(self.image_w, dtype=np.int64),
            "image_h": np.asarray(self.image_h, dtype=np.int64),
            "scores": self.scores,
            "labels": self.labels,
        }


ENCODER_PREFIX = "captioner.encoder."  # the encoder's weights in a captioning checkpoint


def trained_encoder(path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The encoder config and weights of a captioning checkpoint (``extract.encoder_from``)."""
    checkpoint = read_checkpoint(path)
    config = checkpoint["hyper_parameters"]["model"].get("encoder")
    if not isinstance(config, dict) or str(config.get("_target_", "")).endswith("RegionEncoder"):
        raise ValueError(
            f"extract.encoder_from={path}: its model has no image encoder to pool regions from"
        )
    weights = {
        key[len(ENCODER_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(ENCODER_PREFIX)
    }
    return dict(config), weights


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class RegionExtractor:
    """A frozen encoder (and detector) that turns images into :class:`Regions`.

    Args:
        settings: what to extract (:class:`ExtractSettings`).
        encoder: the encoder's config (a ``conf/encoder`` node, resolved): its feature map is
            what the boxes are pooled from.
        device: ``auto`` (CUDA when there is one) or a torch device.

    Random weights (``pretrained=false``, an encoder without pretrained weights) are drawn
    from ``settings.seed``, so the same settings give the same weights, and files.
    """

    def __init__(
        self,
        settings: ExtractSettings,
        encoder: Mapping[str, Any],
        device: str | torch.device = "auto",
    ) -> None:
        self.settings = settings
        self.encoder_config = dict(encoder)
        self.device = resolve_device(device)
        self.detector: TorchvisionDetector | None = None
        self.categories: list[str] | None = None  # the names of the detector's labels
        trained = trained_encoder(settings.encoder_from) if settings.encoder_from else None
        if trained is not None:
            self.encoder_config = trained[0]
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left alone
            torch.manual_seed(settings.seed)
            if trained is not None:  # its weights replace any pretrained ones: none are read
                with weights_from_checkpoint():
                    self.encoder = instantiate(self.encoder_config, _convert_="all")
                self.encoder.load_state_dict(trained[1])
            else:
                self.encoder = instantiate(self.encoder_config, _convert_="all")
            if settings.detector == "torchvision":
                model = build_detector(
                    settings.model, settings.pretrained, settings.detector_options
                )
                if settings.pretrained:
                    weights = torchvision.models.get_model_weights(settings.model).DEFAULT
                    self.categories = list(weights.meta.get("categories", [])) or None
                self.detector = TorchvisionDetector(
                    model, settings.min_score, settings.min_regions, settings.max_regions,
                    settings.nms_iou,
                )  # fmt: skip
        self.encoder.eval().requires_grad_(False)
        self.weights = {
            "encoder": weights_digest(self.encoder),
            "detector": weights_digest(self.detector.model) if self.detector else None,
        }
        self.encoder.to(self.device)
        if self.detector is not None:
            self.detector.to(self.device)

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], device: str | torch.device = "auto"
    ) -> RegionExtractor:
        """The extractor of an ``extract.json`` (or of the copy a checkpoint keeps)."""
        version = int(settings.get("version", VERSION))
        if version > VERSION:
            raise ValueError(
                f"these extraction settings are of version {version}, newer than this "
                f"captioning's {VERSION}: update captioning to use them"
            )
        chosen = {k: v for k, v in settings.items() if k not in NOT_SETTINGS}
        extractor = cls(ExtractSettings.from_options(chosen), settings["encoder"], device)
        recorded = settings.get("weights")
        if recorded and recorded != extractor.weights:
            log.warning(
                "The rebuilt extractor's weights differ from those the settings were recorded "
                "with (%s now, %s then): its features differ from the files' (other cached "
                "pretrained weights, or another torch version's random ones)",
                extractor.weights,
                recorded,
            )
        return extractor

    def record(self) -> dict[str, Any]:
        """The settings as ``extract.json`` holds them (the encoder's config and a digest of the
        weights included)."""
        record = {
            "writer": WRITER,
            "version": VERSION,
            **self.settings.record(),
            "encoder": self.encoder_config,
            "weights": self.weights,
        }
        if self.categories:
            record["categories"] = self.categories  # labels[i] names categories[labels[i]]
        return record

    @torch.no_grad()
    def __call__(
        self,
        images: Sequence[torch.Tensor | str | Path],
        boxes: Sequence[np.ndarray] | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[Regions]:
        """Regions of ``images``: uint8 ``(3, H, W)`` tensors at their original size, or files.

        ``boxes`` (``detector=boxes`` only): per image, its annotated boxes ``(K, 4)`` x1, y1,
        x2, y2 in its pixels. ``keys`` name the images (their file stems by default, else their
        positions): jitter, distractors and order are drawn per key.
        """
        decoded = [load_image(i, None) if isinstance(i, str | Path) else i for i in images]
        if keys is None:
            keys = [
                Path(i).stem if isinstance(i, str | Path) else str(n) for n, i in enumerate(images)
            ]
        sizes = [(int(image.shape[-1]), int(image.shape[-2])) for image in decoded]  # (w, h)
        found = self._regions(decoded, sizes, boxes, keys)
        side = self.settings.image_size
        resized = torch.stack(
            [
                image if tuple(image.shape[-2:]) == (side, side)
                else F.resize(image, [side, side], antialias=True)  # as load_image resizes
                for image in decoded
            ]
        )  # fmt: skip  # (B, 3, S, S) uint8
        maps = feature_map(self.encoder, resized.to(self.device).float().div_(255))
        pooled = pool_regions(
            maps, [d.boxes for d in found], sizes, self.settings.roi_size,
            self.settings.sampling_ratio,
        )  # fmt: skip
        dtype = np.dtype(self.settings.dtype)
        return [
            Regions(
                feat=feat.cpu().numpy().astype(dtype),
                boxes=d.boxes.cpu().numpy().astype(np.float32),
                scores=d.scores.cpu().numpy().astype(np.float32),
                labels=d.labels.cpu().numpy().astype(np.int64),
                image_w=width,
                image_h=height,
            )
            for feat, d, (width, height) in zip(pooled, found, sizes, strict=True)
        ]

    def _regions(
        self,
        images: list[torch.Tensor],
        sizes: list[tuple[int, int]],
        boxes: Sequence[np.ndarray] | None,
        keys: Sequence[str],
    ) -> list[Detections]:
        """Per image, its regions in its own pixels."""
        settings = self.settings
        if self.detector is not None:
            if boxes is not None:
                raise ValueError("extract.detector=torchvision finds its own boxes; give none")
            floats = [image.to(self.device).float().div_(255) for image in images]
            return self.detector(floats)
        if boxes is None or len(boxes) != len(images):
            raise ValueError("extract.detector=boxes needs the annotated boxes of every image")
        found = []
        for annotated, (width, height), key in zip(boxes, sizes, keys, strict=True):
            regions, scores, labels = oracle_regions(
                annotated, width, height, image_rng(settings.seed, key), settings.jitter,
                settings.distractors, settings.distractor_size, settings.shuffle,
            )  # fmt: skip
            found.append(
                Detections(
                    torch.from_numpy(regions), torch.from_numpy(scores), torch.from_numpy(labels)
                )
            )
        return found
