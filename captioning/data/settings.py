"""The DataModule's settings, in six groups: records, images, regions, text, loaders and caches.

The Hydra keys stay flat (``data.batch_size``, ``data.on_error``, ...): each key names a field
of exactly one group, and :meth:`DataSettings.from_flat` sorts them; a key no group has (one
added with ``+data.KEY=...``, or a typo in a data config of one's own) is an error that lists
the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from captioning.data.dataset import check_sampling
from captioning.data.formats import BadData


def _expand(path: str | None) -> str | None:
    """``~/data`` as a user writes it (quoted on a Hydra command line)."""
    return str(Path(path).expanduser()) if path else path


@dataclass(frozen=True)
class SourceSettings:
    """Where the records come from and what counts as bad data.

    Args:
        layout: ``auto`` | ``kaggle`` | ``token`` | ``karpathy`` | ``coco`` | ``folder``.
        image_dir: the image folder, when it is not the layout's usual one.
        boxes_file: per-image object annotations (Shapes' ``boxes.json``), relative to root.
        on_error: ``raise`` at the first bad record, or ``skip`` bad records and report them.
        allow_outside_root: let a caption file name images outside ``root`` and the image
            folder (by ``../`` or an absolute path); refused as bad data otherwise.
    """

    layout: str = "auto"
    image_dir: str | None = None
    boxes_file: str | None = None
    on_error: str = "raise"
    allow_outside_root: bool = False

    def __post_init__(self) -> None:
        BadData(self.on_error)  # checks the value up front, naming data.on_error
        object.__setattr__(self, "image_dir", _expand(self.image_dir))


@dataclass(frozen=True)
class ImageSettings:
    """How images are decoded.

    Args:
        image_size: images are resized to ``image_size`` x ``image_size``.
        preload: decode every image once into memory (small data sets; no workers needed).
        check_images: decode every image at setup so a bad file fails here, by name.
        max_image_pixels: larger images are bad data (decompression bombs).

    With ``data.region_features`` no image is decoded: ``preload`` and ``check_images`` do
    nothing, and an image file is read only for its size (its header) where a region file
    stores none.
    """

    image_size: int = 224
    preload: bool = False
    check_images: bool = True
    max_image_pixels: int | None = 89_478_485


REGION_KEYS = ("auto", "cocoid", "stem")


@dataclass(frozen=True)
class RegionSettings:
    """Precomputed region features served instead of images (:mod:`captioning.data.regions`).

    Args:
        region_features: a folder of ``<key>.npz`` / ``<key>.npy`` files, or one ``.h5`` /
            ``.hdf5`` file (relative to root unless absolute); None serves images.
        region_boxes: a folder of ``<key>.npy`` boxes ``(N, 4)`` in image pixels, for
            features stored without them.
        region_key: what names an image's regions: ``cocoid`` (the record's COCO id),
            ``stem`` (the image file's name without its suffix) or ``auto`` (the COCO id where
            the record has one, else the stem).
    """

    region_features: str | None = None
    region_boxes: str | None = None
    region_key: str = "auto"

    def __post_init__(self) -> None:
        if self.region_key not in REGION_KEYS:
            raise ValueError(
                f"data.region_key must be one of {REGION_KEYS}, got {self.region_key!r}"
            )
        if self.region_boxes and not self.region_features:
            raise ValueError(
                "data.region_boxes is set but data.region_features is not: the boxes belong to "
                "region features; set data.region_features too, or data.region_boxes=null"
            )
        object.__setattr__(self, "region_features", _expand(self.region_features))
        object.__setattr__(self, "region_boxes", _expand(self.region_boxes))


@dataclass(frozen=True)
class TextSettings:
    """How captions become token ids.

    Args:
        min_freq: words seen fewer times in train become ``<unk>``.
        max_caption_len: captions are cut to this many words.
    """

    min_freq: int = 1
    max_caption_len: int = 40


@dataclass(frozen=True)
class LoaderSettings:
    """Batches and loaders.

    Args:
        batch_size / eval_batch_size: training and validation/test batch sizes.
        num_workers / pin_memory / persistent_workers: DataLoader settings.
        captions_per_image: ``random`` | ``all`` | ``first`` (see CaptionBatchSampler).
        bucket_batches: group training captions of similar length, within windows of this
            many batches, so batches carry little padding (0 turns it off).
        seed: seed of the sampling order (epoch e uses seed + e).
    """

    batch_size: int = 64
    eval_batch_size: int = 250
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    captions_per_image: str = "random"
    bucket_batches: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_sampling(self.captions_per_image)
        # workers that do not exist cannot persist
        object.__setattr__(
            self, "persistent_workers", self.persistent_workers and self.num_workers > 0
        )


@dataclass(frozen=True)
class CacheSettings:
    """What is kept between runs.

    Args:
        cache: keep the parsed, tokenised records in a cache keyed by the source files.
        cache_dir: where the caches live (default: ``root/.cache``).
        cache_features: train on region features a frozen encoder extracted once (the
            entry point calls ``use_feature_cache`` at set-up, ``captioning.wiring``).
    """

    cache: bool = True
    cache_dir: str | None = None
    cache_features: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_dir", _expand(self.cache_dir))


@dataclass(frozen=True)
class DataSettings:
    """All of a DataModule's settings, by group."""

    source: SourceSettings = field(default_factory=SourceSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    regions: RegionSettings = field(default_factory=RegionSettings)
    text: TextSettings = field(default_factory=TextSettings)
    loader: LoaderSettings = field(default_factory=LoaderSettings)
    caching: CacheSettings = field(default_factory=CacheSettings)

    def __post_init__(self) -> None:
        if self.regions.region_features and self.caching.cache_features:
            raise ValueError(
                "data.cache_features=true caches what an image encoder computes, but "
                "data.region_features serves precomputed region features: there is no image "
                "encoder to cache; set data.cache_features=false"
            )

    @classmethod
    def from_flat(cls, **flat: Any) -> DataSettings:
        """Sort flat ``data.*`` keys into their groups; an unknown key is an error naming it."""
        groups = {f.name: f.default_factory for f in fields(cls)}  # type: ignore[misc]
        owner = {key.name: group for group, kind in groups.items() for key in fields(kind)}
        chosen: dict[str, dict[str, Any]] = {group: {} for group in groups}
        unknown = sorted(key for key in flat if key not in owner)
        if unknown:
            raise TypeError(
                f"unknown data setting(s) {', '.join(f'data.{k}' for k in unknown)}; "
                f"the settings are: {', '.join(sorted(owner))} (besides root, reader, "
                "generator and vocab)"
            )
        for key, value in flat.items():
            chosen[owner[key]][key] = value
        return cls(**{group: groups[group](**values) for group, values in chosen.items()})
