"""The LightningDataModule: parse once, build the vocabulary, serve padded batches."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L
import torch
from torch.utils.data import DataLoader

from captioning.data.cache import RecordCache
from captioning.data.dataset import (
    CaptionBatchSampler,
    CaptionDataset,
    CaptionLoader,
    CaptionPairs,
    PadCollate,
    RegionDataset,
)
from captioning.data.features import FeatureCache, MappedFeatures
from captioning.data.formats import SPLITS, BadData, DataError, ImageRecord
from captioning.data.images import find_bad_images, load_images
from captioning.data.region_index import check_region_files, region_keys
from captioning.data.regions import RegionReader
from captioning.data.settings import DataSettings
from captioning.text import TOKENIZER_VERSION, Vocabulary, tokenize

log = logging.getLogger(__name__)


@runtime_checkable
class DataGenerator(Protocol):
    """What writes a data set into ``root`` on first use (``data.generator``).

    :class:`captioning.data.shapes.ShapesGenerator` is the built-in one.
    """

    @property
    def image_size(self) -> int:
        """Side of the generated images (what ``boxes_file`` coordinates refer to)."""
        ...

    def prepare(self, root: str | os.PathLike) -> None:
        """Generate the set into ``root`` unless it is already there."""
        ...

    def ready(self, root: str | os.PathLike) -> AbstractContextManager[Any]:
        """A block during which the set in ``root`` is complete and nobody replaces it."""
        ...


class CaptionDataModule(L.LightningDataModule):
    """Records -> vocabulary -> datasets -> loaders.

    Args:
        root: the dataset folder.
        reader: ``reader(root) -> list[ImageRecord]`` (a Hydra partial of a format reader).
        generator: writes the data into ``root`` on first use (:class:`DataGenerator`; Shapes'
            is ``captioning.data.shapes.ShapesGenerator``); None for data on disk.
        settings: the grouped settings (:class:`~captioning.data.settings.DataSettings`).
        vocab: a fixed vocabulary's tokens (a checkpoint's, to evaluate it); None: built on
            the train split.
        **flat: the same settings by their flat ``data.*`` names, as the Hydra configs give
            them (``batch_size=64, on_error="skip"``); see :mod:`captioning.data.settings`.

    With ``data.region_features`` the batches carry precomputed regions instead of images
    (``regions``, ``region_mask``, ``boxes``: :class:`~captioning.data.dataset.PadCollate`);
    after setup ``region_dim`` is their width D and ``has_boxes`` says whether every image
    has boxes (else they are zeros).
    """

    def __init__(
        self,
        root: str,
        reader: Callable[..., list[ImageRecord]],
        generator: DataGenerator | None = None,
        settings: DataSettings | None = None,
        vocab: Sequence[str] | None = None,
        **flat: Any,
    ) -> None:
        super().__init__()
        if settings is not None and flat:
            raise TypeError("CaptionDataModule: give settings or flat keys, not both")
        if generator is not None and not isinstance(generator, DataGenerator):
            raise TypeError(
                f"data.generator: {generator!r} has no prepare/ready/image_size; give it a "
                "_target_ (captioning.data.shapes.ShapesGenerator for Shapes)"
            )
        self.root = Path(root).expanduser()  # '~/data' (quoted on a Hydra command line)
        self.reader = reader
        self.generator = generator
        self.settings = settings if settings is not None else DataSettings.from_flat(**flat)
        self.source = self.settings.source
        self.images = self.settings.images
        self.text = self.settings.text
        self.loader = self.settings.loader
        self.caching = self.settings.caching
        self.regions = self.settings.regions
        self.region_reader: RegionReader | None = None
        self.region_dim: int | None = None  # D of the region features, after setup
        self.has_boxes = False  # every image's regions have boxes, after setup
        self.region_index: dict[str, list[tuple[str, tuple[int, int] | None]]] = {}
        self.feature_cache: FeatureCache | None = None
        self.skipped: dict[str, int] = {}
        self.vocab: Vocabulary | None = Vocabulary(vocab) if vocab is not None else None
        self.records: dict[str, list[ImageRecord]] = {}
        self.tokens: dict[str, list[list[list[str]]]] = {}
        self.datasets: dict[str, CaptionPairs] = {}
        self.fingerprint = ""
        self.boxes: dict[str, list[dict[str, Any]]] | None = None
        self.train_loader: CaptionLoader | None = None
        self.resume_position: dict[str, int] | None = None

    @property
    def image_size(self) -> int:
        """Side of the images the model sees."""
        return self.images.image_size

    @property
    def uses_regions(self) -> bool:
        """Whether precomputed region features are served instead of images."""
        return self.regions.region_features is not None

    # ------------------------------------------------------------------ preparation

    def prepare_data(self) -> None:
        if self.generator is not None:
            self.generator.prepare(self.root)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return  # parse once, whatever the number of stages
        if self.generator is None:
            self._setup()
            return
        # the generated set cannot change while it is read (with preload: until its images are
        # in memory); a run with other data.generator settings waits instead of replacing it
        with self.generator.ready(self.root):
            self._setup()

    def _setup(self) -> None:
        start = time.perf_counter()
        cache = (
            RecordCache(self.root, self.caching.cache_dir, self._cache_settings())
            if self.caching.cache
            else None
        )
        cached = cache.load() if cache is not None else None
        if cached is not None:
            records, tokens, self.skipped = cached
            how = f"records from the cache {cache.path} in {time.perf_counter() - start:.2f}s"
            how += " (parsing skipped)"
        else:
            errors = BadData(self.source.on_error)
            records, tokens = self._read(errors)
            self.skipped = dict(errors.counts)
            if errors.counts:
                log.warning("Data %s: dropped bad records: %s", self.root, errors.summary())
            how = f"records parsed in {time.perf_counter() - start:.2f}s"
            if cache is not None and cache.save(records, tokens, self.skipped, errors.examples):
                how += f" and cached to {cache.path}"
        index: list[tuple[str, tuple[int, int] | None]] = []
        if self.uses_regions:  # checked at every start: the feature files are not in the cache
            records, tokens, index = self._check_regions(records, tokens)
            how += f"; region files of D={self.region_dim} checked"
        for split in SPLITS:
            chosen = [i for i, r in enumerate(records) if r.split == split]
            self.records[split] = [records[i] for i in chosen]
            self.tokens[split] = [tokens[i] for i in chosen]
            if self.uses_regions:
                self.region_index[split] = [index[i] for i in chosen]
            if not self.records[split]:
                raise DataError(
                    f"{self.root}: the {split} split has no images"
                    + (f" after dropping bad records ({self.skipped})" if self.skipped else "")
                )
        if self.vocab is None:  # else a checkpoint's, given to the constructor
            self.vocab = Vocabulary.build(
                (c for caps in self.tokens["train"] for c in caps), self.text.min_freq
            )
        self.fingerprint = self._fingerprint(records)
        self.boxes = self._read_boxes()
        for split in SPLITS:
            self.datasets[split] = self._dataset(split)
        log.info(
            "Data %s: %s images, vocabulary %d words; %s; ready in %.2fs",
            self.root,
            "/".join(str(len(self.records[s])) for s in SPLITS),
            len(self.vocab),
            how,
            time.perf_counter() - start,
        )

    def _read(self, errors: BadData) -> tuple[list[ImageRecord], list[list[list[str]]]]:
        """Read, tokenise and check: the records that pass, with their tokenised captions."""
        kept, kept_tokens = [], []
        for record in self.reader(
            root=self.root,
            layout=self.source.layout,
            image_dir=self.source.image_dir,
            errors=errors,
            allow_outside_root=self.source.allow_outside_root,
            **({"require_images": False} if self._images_optional else {}),
        ):
            captions, tokens = [], []
            for caption in record.captions:
                words = tokenize(caption)[: self.text.max_caption_len]
                if words:
                    captions.append(caption)
                    tokens.append(words)
                else:
                    errors(
                        "empty caption",
                        f"{record.image_id}: caption {caption!r} is empty after tokenisation",
                    )
            if not captions:
                continue
            kept.append(replace(record, captions=tuple(captions)))
            kept_tokens.append(tokens)
        if self._check_images:
            good = check_images([r.path for r in kept], self.images.max_image_pixels, errors)
            kept = [r for r, ok in zip(kept, good, strict=True) if ok]
            kept_tokens = [t for t, ok in zip(kept_tokens, good, strict=True) if ok]
        return kept, kept_tokens

    @property
    def _check_images(self) -> bool:
        return self.images.check_images and not self.uses_regions  # regions: no pixels read

    @property
    def _images_optional(self) -> bool:
        """Region features serve the images: a reader that can keeps those whose file is
        absent (``require_images=False``)."""
        if not self.uses_regions:
            return False
        try:
            parameters = inspect.signature(self.reader).parameters.values()
        except (TypeError, ValueError):  # a callable without a signature: only the protocol's
            return False
        return any(
            p.name == "require_images" or p.kind is inspect.Parameter.VAR_KEYWORD
            for p in parameters
        )

    def _check_regions(
        self, records: list[ImageRecord], tokens: list[list[list[str]]]
    ) -> tuple[list[ImageRecord], list[list[list[str]]], list[tuple[str, tuple[int, int] | None]]]:
        """Open the region files and check every image's headers (``data.on_error`` for the bad
        ones): the records that pass, their captions and their (key, image size)."""
        boxes = self.regions.region_boxes
        reader = RegionReader.open(
            self._under_root(self.regions.region_features),
            self._under_root(boxes) if boxes else None,
        )
        errors = BadData(self.source.on_error)
        try:
            keys = region_keys(records, self.regions.region_key)
            check = check_region_files(
                reader, keys, [r.path for r in records], errors, [r.image_id for r in records]
            )
        finally:
            reader.close()  # opened again where it is read: an HDF5 handle must not cross a fork
        if errors.counts:
            log.warning(
                "Data %s: dropped images with bad region files: %s", self.root, errors.summary()
            )
            self.skipped = dict(Counter(self.skipped) + errors.counts)
        self.region_reader, self.region_dim, self.has_boxes = reader, check.dim, check.has_boxes
        kept = [i for i, ok in enumerate(check.good) if ok]
        return (
            [records[i] for i in kept],
            [tokens[i] for i in kept],
            [(keys[i], check.sizes[i]) for i in kept],
        )

    def _under_root(self, path: str) -> Path:
        """A path setting: as given when absolute, else relative to ``data.root``."""
        return Path(path) if Path(path).is_absolute() else self.root / path

    def use_feature_cache(
        self,
        encoder: torch.nn.Module,
        config: dict[str, Any],
        device: torch.device,
        is_main: bool = True,
        barrier: Callable[[], None] = lambda: None,
    ) -> None:
        """Extract (on the main process, resumably) and then serve cached region features."""
        if self.uses_regions:
            raise DataError(
                "data.cache_features: data.region_features serves precomputed regions already; "
                "there is no image encoder to cache"
            )
        paths = {split: [r.path for r in self.records[split]] for split in SPLITS}
        cache = FeatureCache(self.cache_folder, encoder, config, self.image_size, paths)
        if self.feature_cache is not None and cache.folder == self.feature_cache.folder:
            return  # already serving these features (fit, then test)
        if is_main:
            cache.prepare(device, self.loader.eval_batch_size)
        barrier()
        for split in SPLITS:
            self.datasets[split].use_features(MappedFeatures(cache.path(split)))
        self.feature_cache = cache

    @property
    def cache_folder(self) -> Path:
        """Where this data's caches live: ``cache_dir``, else ``root/.cache``."""
        return Path(self.caching.cache_dir) if self.caching.cache_dir else self.root / ".cache"

    def _cache_settings(self) -> dict[str, Any]:
        reader = self.reader
        return {
            "reader": getattr(getattr(reader, "func", reader), "__qualname__", repr(reader)),
            "reader_options": {k: repr(v) for k, v in getattr(reader, "keywords", {}).items()},
            "layout": self.source.layout,
            "image_dir": self.source.image_dir,
            "on_error": self.source.on_error,
            "check_images": self._check_images,
            "require_images": not self._images_optional,
            "max_image_pixels": self.images.max_image_pixels,
            "max_caption_len": self.text.max_caption_len,
            "allow_outside_root": self.source.allow_outside_root,
            "tokenizer": TOKENIZER_VERSION,
        }

    def _dataset(self, split: str) -> CaptionPairs:
        assert self.vocab is not None
        encoded = [[self.vocab.encode(c) for c in caps] for caps in self.tokens[split]]
        if self.region_reader is not None:
            keys, sizes = zip(*self.region_index[split], strict=True)
            return RegionDataset(self.region_reader, keys, encoded, sizes, self.has_boxes)
        paths = [r.path for r in self.records[split]]
        images = load_images(paths, self.image_size) if self.images.preload else None
        return CaptionDataset(paths, encoded, self.image_size, images)

    def _fingerprint(self, records: list[ImageRecord]) -> str:
        digest = hashlib.sha256()
        for record in records:
            digest.update(f"{record.image_id}|{record.split}|{'|'.join(record.captions)}".encode())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------------ what metrics need

    def references(self, split: str) -> dict[int, list[str]]:
        """Image index -> its normalised reference captions (space-joined tokens)."""
        return {i: [" ".join(c) for c in caps] for i, caps in enumerate(self.tokens[split])}

    @property
    def annotation_image_size(self) -> int:
        """Side of the images that ``boxes_file`` coordinates refer to."""
        return self.generator.image_size if self.generator is not None else self.image_size

    def image_ids(self, split: str) -> list[str]:
        return [r.image_id for r in self.records[split]]

    def objects(self, split: str) -> dict[int, list[dict[str, Any]]] | None:
        """Image index -> annotated objects (``boxes.json``), or None when there are none."""
        if self.boxes is None:
            return None
        return {i: self.boxes.get(r.image_id, []) for i, r in enumerate(self.records[split])}

    def _read_boxes(self) -> dict[str, list[dict[str, Any]]] | None:
        path = self.root / self.source.boxes_file if self.source.boxes_file else None
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{path}: not a valid annotation file ({error})") from None

    # ------------------------------------------------------------------ loaders

    def _loader(self, split: str, batch_size: int, train: bool) -> CaptionLoader:
        assert self.vocab is not None, "call setup() first"
        sampler = CaptionBatchSampler(
            self.datasets[split],
            batch_size,
            sampling=self.loader.captions_per_image if train else "first",
            shuffle=train,
            bucket_batches=self.loader.bucket_batches if train else 0,
            seed=self.loader.seed,
        )
        return CaptionLoader(
            self.datasets[split],
            batch_sampler=sampler,
            num_workers=self.loader.num_workers,
            pin_memory=self.loader.pin_memory,
            persistent_workers=self.loader.persistent_workers,
            collate_fn=PadCollate(self.vocab.pad_id),
        )

    def train_dataloader(self) -> DataLoader:
        self.train_loader = self._loader("train", self.loader.batch_size, train=True)
        self._resume_train_loader()
        return self.train_loader

    # ------------------------------------------------------------------ checkpointed state

    def state_dict(self) -> dict[str, Any]:
        """Where the training loader is in its epoch (Lightning stores it in every checkpoint)."""
        return {"train_position": self.train_loader.position} if self.train_loader else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the training batch order mid-epoch where the checkpoint left it.

        Lightning restores the datamodule before it asks for the loaders; a loader that
        already exists is moved as well.
        """
        self.resume_position = state_dict.get("train_position")
        self._resume_train_loader()

    def _resume_train_loader(self) -> None:
        if self.resume_position is not None and self.train_loader is not None:
            self.train_loader.resume_at(self.resume_position)
            self.resume_position = None  # once: a reloaded loader starts its epoch afresh

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.loader.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.loader.eval_batch_size, train=False)


def check_images(paths: list[Path], max_pixels: int | None, errors: BadData) -> list[bool]:
    """Decode every image as training will; per path, whether it passed.

    Each bad file goes through the policy in record order, so that under ``raise`` the
    first one stops the run by name instead of the first batch that holds it.
    """
    good = []
    for path, error in zip(paths, find_bad_images(paths, max_pixels), strict=True):
        if error is not None and error.kind == "oversized image":
            errors(error.kind, str(error))
        elif error is not None:
            errors(error.kind, f"{path}: unreadable or truncated image ({error.reason})")
        good.append(error is None)
    return good
