"""What an extraction is: the settings ``extract.json`` records and a checkpoint carries.

The ``extract`` config node mixes the settings that decide the features (the detector, its
limits, the boxes' jitter and distractors, the pooling, the dtype, the seed) with the options
of one run (``batch_size``, ``device``, ``overwrite``), which change nothing in the files.
:class:`ExtractSettings` holds the first kind and checks every value up front, naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

VERSION = 1  # of the file layout and of what the settings mean; bumped when either changes
WRITER = "captioning.extract"  # extract.json's marker: the folder is this command's output
DETECTORS = ("torchvision", "boxes")
DTYPES = ("float32", "float16")
KEYS = ("auto", "stem", "coco_id")
RUN_OPTIONS = ("batch_size", "device", "overwrite")  # how a run goes, not what it writes
COMMON = (
    "detector", "image_size", "roi_size", "sampling_ratio", "dtype", "seed", "key", "encoder_from",
)  # fmt: skip
ONLY_FOR = {  # the settings that mean something for one detector only
    "torchvision": (
        "model", "pretrained", "detector_options", "max_regions", "min_regions", "min_score",
        "nms_iou",
    ),
    "boxes": ("jitter", "distractors", "distractor_size", "shuffle"),
}  # fmt: skip


@dataclass(frozen=True)
class ExtractSettings:
    """The settings of an extraction (the ``extract.*`` keys; see ``conf/extract.yaml``).

    Args:
        detector: ``torchvision`` (a detection model's boxes) | ``boxes`` (the data's
            ``boxes_file``, e.g. Shapes' ``boxes.json``: oracle boxes, no weights).
        model: any ``torchvision.models.detection`` builder name.
        pretrained: the builder's COCO weights from the torch cache (``TORCH_HOME``).
        detector_options: keyword arguments of the builder (score threshold, candidates).
        max_regions / min_regions / min_score / nms_iou: keep the boxes scoring at least
            ``min_score`` after class-agnostic NMS at ``nms_iou``, at most ``max_regions``,
            and the ``min_regions`` best ones when fewer pass (bottom-up attention's rule).
        jitter: each side of an oracle box moves by up to this fraction of the box's side.
        distractors: random boxes added per image; ``distractor_size`` bounds their sides as
            fractions of the image's.
        shuffle: shuffle objects and distractors (else objects first, in file order).
        image_size: the side images are resized to for the encoder.
        roi_size / sampling_ratio: ``roi_align``'s output size (mean-pooled after) and samples.
        dtype: of the stored features, ``float32`` | ``float16``.
        seed: of the random weights (``pretrained=false``) and of jitter / distractors / order.
        key: a file's name: ``auto`` (the record's COCO id where it has one, else the image
            file's stem) | ``stem`` | ``coco_id``.
        encoder_from: a captioning checkpoint whose trained encoder (its config and weights)
            the boxes are pooled from, in place of the ``encoder`` group's (random or
            pretrained) one: a backbone trained on the captions' own images, as bottom-up
            features come from a detector trained on Visual Genome.
    """

    detector: str = "boxes"
    model: str = "fasterrcnn_resnet50_fpn_v2"
    pretrained: bool = True
    detector_options: dict[str, Any] = field(
        default_factory=lambda: {"box_score_thresh": 0.0, "box_detections_per_img": 300}
    )  # conf/extract.yaml's: candidates of any score, so that min_regions can be met
    max_regions: int = 36
    min_regions: int = 10
    min_score: float = 0.2
    nms_iou: float = 0.3
    jitter: float = 0.0
    distractors: int = 0
    distractor_size: tuple[float, float] = (0.1, 0.5)
    shuffle: bool = True
    image_size: int = 224
    roi_size: int = 7
    sampling_ratio: int = 2
    dtype: str = "float32"
    seed: int = 0
    key: str = "auto"
    encoder_from: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "distractor_size", tuple(float(s) for s in self.distractor_size))
        object.__setattr__(self, "detector_options", dict(self.detector_options or {}))
        checks = [
            (self.detector in DETECTORS, "detector", f"one of {', '.join(DETECTORS)}"),
            (self.dtype in DTYPES, "dtype", f"one of {', '.join(DTYPES)}"),
            (self.key in KEYS, "key", f"one of {', '.join(KEYS)}"),
            (self.max_regions >= 1, "max_regions", ">= 1"),
            (0 <= self.min_regions <= self.max_regions, "min_regions", "in [0, max_regions]"),
            (0.0 <= self.min_score <= 1.0, "min_score", "in [0, 1]"),
            (0.0 < self.nms_iou <= 1.0, "nms_iou", "in (0, 1]"),
            # below 1/2 the two sides of a box can never cross
            (0.0 <= self.jitter < 0.5, "jitter", "in [0, 0.5)"),
            (self.distractors >= 0, "distractors", ">= 0"),
            (
                len(self.distractor_size) == 2
                and 0.0 < self.distractor_size[0] <= self.distractor_size[1] <= 1.0,
                "distractor_size",
                "[low, high] with 0 < low <= high <= 1",
            ),
            (self.image_size >= 1, "image_size", ">= 1"),
            (self.roi_size >= 1, "roi_size", ">= 1"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ValueError(f"extract.{key} must be {expected}, got {getattr(self, key)!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ExtractSettings:
        """The settings among an ``extract`` config node's keys (run options left aside)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in options if k not in known and k not in RUN_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown extract setting(s) {', '.join(f'extract.{k}' for k in unknown)}; the "
                f"settings are: {', '.join(sorted([*known, *RUN_OPTIONS]))}"
            )
        return cls(**{k: v for k, v in options.items() if k in known})

    def record(self) -> dict[str, Any]:
        """The settings that decide this detector's files (what ``extract.json`` holds)."""
        values = asdict(self)
        chosen = {k: values[k] for k in (*COMMON, *ONLY_FOR[self.detector])}
        if "distractor_size" in chosen:
            chosen["distractor_size"] = list(chosen["distractor_size"])
        return chosen


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"encoder": {"depth": 50}}`` as ``{"encoder.depth": 50}``."""
    if not isinstance(value, Mapping) or not value:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def differences(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``key: recorded -> wanted`` for every key on which two settings differ."""
    old, new = flatten(recorded), flatten(wanted)
    missing = object()
    return [
        f"{key}: {old.get(key, '(none)')!r} -> {new.get(key, '(none)')!r}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, missing) != new.get(key, missing)
    ]
