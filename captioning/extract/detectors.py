"""Where the regions are: a torchvision detector's boxes, or the data's own (oracle) boxes.

A torchvision detection model gives per-class boxes; :func:`select_regions` keeps them the
way bottom-up attention does (Anderson et al. 2018): class-agnostic NMS, then every box scoring
at least ``min_score``, at most ``max_regions``, and the ``min_regions`` best when fewer pass.
:func:`oracle_regions` turns annotated boxes into regions, optionally jittered and mixed with
random distractor boxes, all drawn from a generator seeded per image.
"""

from __future__ import annotations

import os
import socket
import zlib
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.ops import nms

from captioning.models.hub import PROXIES


class Detections(NamedTuple):
    """One image's boxes ``(N, 4)`` x1, y1, x2, y2 in its pixels, scores ``(N,)``, labels ``(N,)``."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def detector_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models.detection))


def weights_file(weights: Any) -> Path:
    """Where torchvision reads ``weights`` from: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def url_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether ``url``'s host answers a TCP connection; behind a proxy, yes (the download
    reports what fails), as :func:`captioning.models.hub.hub_reachable` does for the hub."""
    if any(os.environ.get(name) for name in PROXIES):
        return True
    parsed = urlparse(url)
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((parsed.hostname or "", port), timeout).close()
    except OSError:
        return False
    return True


def weights_error(name: str, weights: Any, reason: str) -> RuntimeError:
    """The message for detector weights that cannot be had: where to put them, or how to do
    without (the wording of the encoders' :func:`captioning.models.hub.weights_error`)."""
    file = weights_file(weights)
    return RuntimeError(
        f"could not load the pretrained weights of {name} ({reason}). They are read from the "
        f"torch cache {file.parent} (TORCH_HOME sets where): on a machine with network, "
        f"download {weights.url} and place it at {file}; or set extract.pretrained=false"
    )


def build_detector(name: str, pretrained: bool, options: dict[str, Any]) -> nn.Module:
    """A torchvision detection model in eval mode, frozen; fails at once when its pretrained
    weights are neither in the torch cache nor downloadable."""
    if name not in detector_names():
        raise ValueError(
            f"extract.model={name!r} is no torchvision detection builder; one of: "
            + ", ".join(detector_names())
        )
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    missing = weights is not None and not weights_file(weights).is_file()
    if missing and not url_reachable(weights.url):
        raise weights_error(name, weights, "not in the torch cache, and no network")
    try:
        # weights_backbone=None: the detector's own weights hold the backbone's, and random
        # weights must not reach for ImageNet ones
        model = torchvision.models.get_model(
            name, weights=weights, weights_backbone=None, **options
        )
    except TypeError as error:
        raise ValueError(
            f"extract.detector_options={options} do not fit {name} ({error}); Faster/Mask/"
            "Keypoint R-CNN take box_score_thresh and box_detections_per_img, RetinaNet, FCOS "
            "and SSD score_thresh and detections_per_img"
        ) from None
    except (OSError, RuntimeError) as error:  # a failed download, a torn cached file
        if weights is None:
            raise
        raise weights_error(name, weights, str(error).splitlines()[0]) from None
    return model.eval().requires_grad_(False)


def select_regions(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    min_score: float,
    min_regions: int,
    max_regions: int,
    nms_iou: float,
) -> torch.Tensor:
    """Indices of the kept boxes, best first (see the module docstring)."""
    kept = nms(boxes.float(), scores.float(), nms_iou)  # over all classes, by score
    passing = kept[scores[kept] >= min_score]
    if len(passing) < min_regions:
        passing = kept[:min_regions]
    return passing[:max_regions]


class TorchvisionDetector(nn.Module):
    """A torchvision detection model and the rule that picks the regions among its boxes.

    Args:
        model: a ``torchvision.models.detection`` model (see :func:`build_detector`).
        min_score / min_regions / max_regions / nms_iou: see :func:`select_regions`.
    """

    def __init__(
        self,
        model: nn.Module,
        min_score: float,
        min_regions: int,
        max_regions: int,
        nms_iou: float,
    ) -> None:
        super().__init__()
        self.model = model
        self.min_score, self.min_regions = min_score, min_regions
        self.max_regions, self.nms_iou = max_regions, nms_iou

    @torch.no_grad()
    def forward(self, images: list[torch.Tensor]) -> list[Detections]:
        """Regions of ``images``, each ``(3, H, W)`` float in [0, 1] at its own size."""
        found = []
        for output in self.model(images):  # boxes in each input image's pixels
            keep = select_regions(
                output["boxes"], output["scores"], self.min_score, self.min_regions,
                self.max_regions, self.nms_iou,
            )  # fmt: skip
            found.append(
                Detections(output["boxes"][keep], output["scores"][keep], output["labels"][keep])
            )
        return found


def image_rng(seed: int, key: str) -> np.random.Generator:
    """A generator of its own per image: an image's draws do not depend on the others'."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def oracle_regions(
    boxes: np.ndarray,
    width: int,
    height: int,
    rng: np.random.Generator,
    jitter: float = 0.0,
    distractors: int = 0,
    distractor_size: tuple[float, float] = (0.1, 0.5),
    shuffle: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Annotated ``boxes (K, 4)`` (image pixels) as regions: (boxes (N, 4), scores (N,),
    labels (N,)), N = K + ``distractors``.

    Each side of a box moves by up to ``jitter`` of the box's width (x) or height (y), the
    result clipped to the image. Distractors have sides drawn from ``distractor_size`` (fractions
    of the image's) and lie wholly inside it. A label is the object's index in ``boxes``, -1 for
    a distractor; every score is 1 (scores do not tell objects from distractors).
    """
    objects = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if jitter > 0 and len(objects):
        sides = np.stack([objects[:, 2] - objects[:, 0], objects[:, 3] - objects[:, 1]], 1)
        shift = rng.uniform(-jitter, jitter, size=objects.shape) * np.tile(sides, 2)
        objects = objects + shift
    objects = np.clip(objects, 0, [width, height, width, height])
    low, high = distractor_size
    sides = rng.uniform(low, high, size=(distractors, 2)) * [width, height]
    corners = rng.uniform(0, 1, size=(distractors, 2)) * ([width, height] - sides)
    extra = np.concatenate([corners, corners + sides], axis=1)
    regions = np.concatenate([objects, extra]).astype(np.float32)
    labels = np.concatenate([np.arange(len(objects)), np.full(distractors, -1)]).astype(np.int64)
    if shuffle:
        order = rng.permutation(len(regions))
        regions, labels = regions[order], labels[order]
    return regions, np.ones(len(regions), dtype=np.float32), labels
