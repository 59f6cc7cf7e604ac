"""The LightningDataModule: parse once, build the vocabulary, serve padded batches."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from captioning.data.cache import RecordCache
from captioning.data.dataset import (
    CaptionBatchSampler,
    CaptionDataset,
    CaptionLoader,
    PadCollate,
)
from captioning.data.features import FeatureCache, MappedFeatures
from captioning.data.formats import SPLITS, BadData, DataError, ImageRecord
from captioning.data.images import find_bad_images, load_images
from captioning.data.shapes import ShapesConfig, ensure_shapes, shapes_ready
from captioning.text import TOKENIZER_VERSION, Vocabulary, tokenize

log = logging.getLogger(__name__)


class CaptionDataModule(L.LightningDataModule):
    """Records -> vocabulary -> datasets -> loaders.

    Args:
        root: the dataset folder.
        reader: ``reader(root) -> list[ImageRecord]`` (a Hydra partial of a format reader).
        generator: Shapes generator settings; when given, the data is generated on first use.
        image_size: images are resized to ``image_size`` x ``image_size``.
        batch_size / eval_batch_size: training and validation/test batch sizes.
        num_workers / pin_memory / persistent_workers: DataLoader settings.
        captions_per_image: ``random`` | ``all`` | ``first`` (see CaptionBatchSampler).
        bucket_batches: group training captions of similar length, within windows of this
            many batches, so batches carry little padding (0 turns it off).
        seed: seed of the sampling order (epoch e uses seed + e).
        min_freq: words seen fewer times in train become ``<unk>``.
        max_caption_len: captions are cut to this many words.
        preload: decode every image once into memory (small data sets; no workers needed).
        check_images: decode every image at setup so a bad file fails here, by name.
        boxes_file: per-image object annotations (Shapes' ``boxes.json``), relative to root.
        layout: ``auto`` | ``kaggle`` | ``token`` | ``karpathy`` | ``coco`` | ``folder``.
        image_dir: the image folder, when it is not the layout's usual one.
        on_error: ``raise`` at the first bad record, or ``skip`` bad records and report them.
        max_image_pixels: larger images are bad data (decompression bombs).
        cache: keep the parsed, tokenised records in a cache keyed by the source files.
        cache_dir: where the caches live (default: ``root/.cache``).
        cache_features: train on region features a frozen encoder extracted once (the
            entry point calls ``use_feature_cache`` at set-up, ``captioning.wiring``).
        allow_outside_root: let a caption file name images outside ``root`` and the image
            folder (by ``../`` or an absolute path); refused as bad data otherwise.
        vocab: a fixed vocabulary's tokens (a checkpoint's, to evaluate it); None: built on
            the train split.
    """

    def __init__(
        self,
        root: str,
        reader: Callable[..., list[ImageRecord]],
        generator: dict[str, Any] | None = None,
        image_size: int = 224,
        batch_size: int = 64,
        eval_batch_size: int = 250,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        captions_per_image: str = "random",
        bucket_batches: int = 0,
        seed: int = 0,
        min_freq: int = 1,
        max_caption_len: int = 40,
        preload: bool = False,
        check_images: bool = True,
        boxes_file: str | None = None,
        layout: str = "auto",
        image_dir: str | None = None,
        on_error: str = "raise",
        max_image_pixels: int | None = 89_478_485,
        cache: bool = True,
        cache_dir: str | None = None,
        cache_features: bool = False,
        allow_outside_root: bool = False,
        vocab: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser()  # '~/data' (quoted on a Hydra command line)
        self.reader = reader
        self.generator = dict(generator) if generator is not None else None
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.captions_per_image = captions_per_image
        self.bucket_batches = bucket_batches
        self.seed = seed
        self.min_freq = min_freq
        self.max_caption_len = max_caption_len
        self.preload = preload
        self.check_images = check_images
        self.boxes_file = boxes_file
        self.layout = layout
        self.image_dir = str(Path(image_dir).expanduser()) if image_dir else image_dir
        self.on_error = BadData(on_error).on_error  # checks the value up front
        self.max_image_pixels = max_image_pixels
        self.cache = cache
        self.cache_dir = str(Path(cache_dir).expanduser()) if cache_dir else cache_dir
        self.cache_features = cache_features
        self.allow_outside_root = allow_outside_root
        self.feature_cache: FeatureCache | None = None
        self.skipped: dict[str, int] = {}
        self.vocab: Vocabulary | None = Vocabulary(vocab) if vocab is not None else None
        self.records: dict[str, list[ImageRecord]] = {}
        self.tokens: dict[str, list[list[list[str]]]] = {}
        self.datasets: dict[str, CaptionDataset] = {}
        self.fingerprint = ""
        self.boxes: dict[str, list[dict[str, Any]]] | None = None
        self.train_loader: CaptionLoader | None = None
        self.resume_position: dict[str, int] | None = None

    # ------------------------------------------------------------------ preparation

    def prepare_data(self) -> None:
        if self.generator is not None:
            ensure_shapes(self.root, ShapesConfig(**self.generator))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return  # parse once, whatever the number of stages
        if self.generator is None:
            self._setup()
            return
        # the generated set cannot change while it is read (with preload: until its images are
        # in memory); a run with other data.generator settings waits instead of replacing it
        with shapes_ready(self.root, ShapesConfig(**self.generator)):
            self._setup()

    def _setup(self) -> None:
        start = time.perf_counter()
        cache = (
            RecordCache(self.root, self.cache_dir, self._cache_settings()) if self.cache else None
        )
        cached = cache.load() if cache is not None else None
        if cached is not None:
            records, tokens, self.skipped = cached
            how = f"records from the cache {cache.path} in {time.perf_counter() - start:.2f}s"
            how += " (parsing skipped)"
        else:
            errors = BadData(self.on_error)
            records, tokens = self._read(errors)
            self.skipped = dict(errors.counts)
            if errors.counts:
                log.warning("Data %s: dropped bad records: %s", self.root, errors.summary())
            how = f"records parsed in {time.perf_counter() - start:.2f}s"
            if cache is not None and cache.save(records, tokens, self.skipped, errors.examples):
                how += f" and cached to {cache.path}"
        for split in SPLITS:
            chosen = [i for i, r in enumerate(records) if r.split == split]
            self.records[split] = [records[i] for i in chosen]
            self.tokens[split] = [tokens[i] for i in chosen]
            if not self.records[split]:
                raise DataError(
                    f"{self.root}: the {split} split has no images"
                    + (f" after dropping bad records ({self.skipped})" if self.skipped else "")
                )
        if self.vocab is None:  # else a checkpoint's, given to the constructor
            self.vocab = Vocabulary.build(
                (c for caps in self.tokens["train"] for c in caps), self.min_freq
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
            layout=self.layout,
            image_dir=self.image_dir,
            errors=errors,
            allow_outside_root=self.allow_outside_root,
        ):
            captions, tokens = [], []
            for caption in record.captions:
                words = tokenize(caption)[: self.max_caption_len]
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
        if self.check_images:
            good = check_images([r.path for r in kept], self.max_image_pixels, errors)
            kept = [r for r, ok in zip(kept, good, strict=True) if ok]
            kept_tokens = [t for t, ok in zip(kept_tokens, good, strict=True) if ok]
        return kept, kept_tokens

    def use_feature_cache(
        self,
        encoder: torch.nn.Module,
        config: dict[str, Any],
        device: torch.device,
        is_main: bool = True,
        barrier: Callable[[], None] = lambda: None,
    ) -> None:
        """Extract (on the main process, resumably) and then serve cached region features."""
        paths = {split: [r.path for r in self.records[split]] for split in SPLITS}
        cache = FeatureCache(self.cache_folder, encoder, config, self.image_size, paths)
        if self.feature_cache is not None and cache.folder == self.feature_cache.folder:
            return  # already serving these features (fit, then test)
        if is_main:
            cache.prepare(device, self.eval_batch_size)
        barrier()
        for split in SPLITS:
            self.datasets[split].use_features(MappedFeatures(cache.path(split)))
        self.feature_cache = cache

    @property
    def cache_folder(self) -> Path:
        """Where this data's caches live: ``cache_dir``, else ``root/.cache``."""
        return Path(self.cache_dir) if self.cache_dir else self.root / ".cache"

    def _cache_settings(self) -> dict[str, Any]:
        reader = self.reader
        return {
            "reader": getattr(getattr(reader, "func", reader), "__qualname__", repr(reader)),
            "reader_options": {k: repr(v) for k, v in getattr(reader, "keywords", {}).items()},
            "layout": self.layout,
            "image_dir": self.image_dir,
            "on_error": self.on_error,
            "check_images": self.check_images,
            "max_image_pixels": self.max_image_pixels,
            "max_caption_len": self.max_caption_len,
            "allow_outside_root": self.allow_outside_root,
            "tokenizer": TOKENIZER_VERSION,
        }

    def _dataset(self, split: str) -> CaptionDataset:
        assert self.vocab is not None
        records = self.records[split]
        paths = [r.path for r in records]
        images = load_images(paths, self.image_size) if self.preload else None
        encoded = [[self.vocab.encode(c) for c in caps] for caps in self.tokens[split]]
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
        if self.generator is not None:
            return int(self.generator.get("image_size", self.image_size))
        return self.image_size

    def image_ids(self, split: str) -> list[str]:
        return [r.image_id for r in self.records[split]]

    def objects(self, split: str) -> dict[int, list[dict[str, Any]]] | None:
        """Image index -> annotated objects (``boxes.json``), or None when there are none."""
        if self.boxes is None:
            return None
        return {i: self.boxes.get(r.image_id, []) for i, r in enumerate(self.records[split])}

    def _read_boxes(self) -> dict[str, list[dict[str, Any]]] | None:
        path = self.root / self.boxes_file if self.boxes_file else None
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
            sampling=self.captions_per_image if train else "first",
            shuffle=train,
            bucket_batches=self.bucket_batches if train else 0,
            seed=self.seed,
        )
        return CaptionLoader(
            self.datasets[split],
            batch_sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=PadCollate(self.vocab.pad_id),
        )

    def train_dataloader(self) -> DataLoader:
        self.train_loader = self._loader("train", self.batch_size, train=True)
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
        return self._loader("val", self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, train=False)


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
