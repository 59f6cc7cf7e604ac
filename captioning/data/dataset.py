"""Torch datasets over image records, length-aware batching and the padding collate."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from captioning.data.features import MappedFeatures
from captioning.data.formats import DataError
from captioning.data.images import load_image
from captioning.data.region_index import normalised_boxes
from captioning.data.regions import RegionReader

SAMPLING = ("random", "all", "first")


def check_sampling(sampling: str) -> None:
    """``data.captions_per_image`` is one of :data:`SAMPLING`, or a ValueError naming it."""
    if sampling not in SAMPLING:
        raise ValueError(f"data.captions_per_image must be one of {SAMPLING}, got {sampling!r}")


class CaptionPairs(Dataset):
    """One sample per (image, caption) pair: ``(image input, token ids (L,), image index)``.

    Which pairs an epoch visits (one random caption per image, every caption, or the first)
    is the batch sampler's choice, so that it can group captions of similar length. What an
    image's input is (pixels or regions) is the subclass's.

    Args:
        captions: encoded captions per image (``<bos> ... <eos>`` ids).
    """

    def __init__(self, captions: Sequence[Sequence[Sequence[int]]]) -> None:
        self.pair_image: list[int] = []
        self.pair_caption: list[int] = []
        self.pair_tokens: list[torch.Tensor] = []
        for index, caps in enumerate(captions):
            for choice, caption in enumerate(caps):
                self.pair_image.append(index)
                self.pair_caption.append(choice)
                self.pair_tokens.append(torch.tensor(caption, dtype=torch.long))
        self.pair_lengths = torch.tensor([len(t) for t in self.pair_tokens])

    def __len__(self) -> int:
        return len(self.pair_tokens)


class CaptionDataset(CaptionPairs):
    """Pairs of an image and a caption: ``(image uint8 (3,S,S), token ids (L,), image index)``.

    Args:
        paths: one image file per image index.
        captions: encoded captions per image (``<bos> ... <eos>`` ids).
        image_size: side the images are resized to.
        images: the decoded images, when the split was preloaded into memory.

    After ``use_features`` the first item is the image's cached encoder regions
    ``(R, D)`` fp16 instead of its pixels (``data.cache_features``).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        captions: Sequence[Sequence[Sequence[int]]],
        image_size: int,
        images: torch.Tensor | None = None,
    ) -> None:
        super().__init__(captions)
        self.paths = list(paths)
        self.image_size = image_size
        self.images = images
        self.features: MappedFeatures | None = None

    def use_features(self, features: MappedFeatures) -> None:
        self.features = features
        self.images = None  # pixels are no longer needed

    def __getitem__(self, pair: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        index = self.pair_image[pair]
        if self.features is not None:
            image = self.features[index]
        elif self.images is not None:
            image = self.images[index]
        else:
            try:
                image = load_image(self.paths[index], self.image_size)
            except DataError as error:  # a file changed since, or data.check_images=false
                raise DataError(
                    f"{error}; data.check_images=true finds such files at start-up and "
                    "data.on_error=skip drops them"
                ) from None
        return image, self.pair_tokens[pair], index


class RegionItem(NamedTuple):
    """One image's precomputed regions, as :class:`RegionDataset` serves them."""

    features: torch.Tensor  # (N, D) float32
    boxes: torch.Tensor  # (N, 4) float32 x1, y1, x2, y2 as fractions of the image; zeros: none


class RegionDataset(CaptionPairs):
    """Pairs of an image's precomputed regions and a caption:
    ``(RegionItem, token ids (L,), image index)`` (``data.region_features``).

    Args:
        reader: the region files (:class:`~captioning.data.regions.RegionReader`).
        keys: each image's key in them.
        captions: encoded captions per image (``<bos> ... <eos>`` ids).
        sizes: each image's (width, height) from its image file, for region files that store
            none; None: the boxes are normalised by their own extent.
        has_boxes: serve the stored boxes (else zeros: some images have none).
    """

    def __init__(
        self,
        reader: RegionReader,
        keys: Sequence[str],
        captions: Sequence[Sequence[Sequence[int]]],
        sizes: Sequence[tuple[int, int] | None],
        has_boxes: bool,
    ) -> None:
        super().__init__(captions)
        self.reader = reader
        self.keys = list(keys)
        self.sizes = list(sizes)
        self.has_boxes = has_boxes

    def __getitem__(self, pair: int) -> tuple[RegionItem, torch.Tensor, int]:
        index = self.pair_image[pair]
        features, boxes, size = self.reader.read(self.keys[index])
        if self.has_boxes:
            boxes = normalised_boxes(boxes, size or self.sizes[index])
        else:  # some images have none: none are served
            boxes = np.zeros_like(boxes)
        item = RegionItem(torch.from_numpy(features), torch.from_numpy(boxes))
        return item, self.pair_tokens[pair], index


class CaptionBatchSampler(Sampler[list[int]]):
    """Batches of pair indices: which captions an epoch visits, and length-aware grouping.

    Args:
        dataset: the dataset whose pairs are sampled (images or regions).
        batch_size: pairs per batch.
        sampling: ``random`` (one random caption per image per epoch), ``all`` (every
            caption) or ``first`` (the first caption of each image, in order; for evaluation).
        shuffle: shuffle the visiting order (training).
        bucket_batches: sort each window of ``bucket_batches`` batches by caption length
            before cutting batches, so padding is short; 0 or 1 turns grouping off.
        seed: base seed; epoch ``e`` uses ``seed + e`` (``set_epoch`` is called by Lightning).

    Under DDP every rank takes every world_size-th batch of the same global order.
    ``start`` batches of the epoch are skipped once: where a run resumed mid-epoch left off
    (set through :meth:`CaptionLoader.resume_at`).
    """

    def __init__(
        self,
        dataset: CaptionPairs,
        batch_size: int,
        sampling: str = "random",
        shuffle: bool = True,
        bucket_batches: int = 0,
        seed: int = 0,
    ) -> None:
        check_sampling(sampling)
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampling = sampling
        self.shuffle = shuffle
        self.bucket_batches = bucket_batches
        self.seed = seed
        self.epoch = 0
        self.start = 0
        pair_image = torch.tensor(dataset.pair_image)
        self.n_images = int(pair_image.max()) + 1 if len(pair_image) else 0
        self.first_pair = torch.zeros(self.n_images, dtype=torch.long)
        self.n_captions = torch.bincount(pair_image, minlength=self.n_images)
        self.first_pair[1:] = torch.cumsum(self.n_captions, 0)[:-1]

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0  # a resumed epoch's offset is not the next epoch's
        self.epoch = epoch

    @property
    def sampler(self) -> CaptionBatchSampler:
        """Itself: Lightning calls ``set_epoch`` on ``loader.batch_sampler.sampler`` only."""
        return self

    def _pairs(self, generator: torch.Generator) -> torch.Tensor:
        if self.sampling == "all":
            return torch.arange(len(self.dataset))
        if self.sampling == "first":
            return self.first_pair.clone()
        offsets = (torch.rand(self.n_images, generator=generator) * self.n_captions).long()
        return self.first_pair + offsets

    def _batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        pairs = self._pairs(generator)
        if self.shuffle:
            pairs = pairs[torch.randperm(len(pairs), generator=generator)]
        if self.bucket_batches > 1:
            window = self.batch_size * self.bucket_batches
            chunks = []
            for start in range(0, len(pairs), window):
                chunk = pairs[start : start + window]
                order = torch.sort(self.dataset.pair_lengths[chunk], stable=True).indices
                chunks.append(chunk[order])
            pairs = torch.cat(chunks)
        batches = [b.tolist() for b in pairs.split(self.batch_size)]
        if self.shuffle and self.bucket_batches > 1:  # sorted buckets, random batch order
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            rank, world = dist.get_rank(), dist.get_world_size()
            batches = batches[rank::world]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start = self.start, 0
        yield from self._batches()[start:]

    def __len__(self) -> int:
        count = self.n_images if self.sampling != "all" else len(self.dataset)
        batches = -(-count // self.batch_size)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            rank, world = dist.get_rank(), dist.get_world_size()
            batches = len(range(rank, batches, world))
        return batches


class CaptionLoader(DataLoader):
    """A DataLoader over a :class:`CaptionBatchSampler` that knows where it is in the epoch.

    ``position`` (epoch, batches handed out) is what the datamodule checkpoints, and
    ``resume_at`` sets where the next iteration starts: a run resumed mid-epoch continues
    that epoch's batch order where it stopped instead of replaying its first batches.
    Worker seeds come from a generator seeded with ``seed + epoch``, so creating the
    iterator draws nothing from the global torch RNG (whose checkpointed state drives
    dropout: a resumed run must draw the same masks as an uninterrupted one).
    """

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # a generator: nothing is drawn before the first batch is asked for, i.e. after
        # Lightning's set_epoch (workers would otherwise prefetch the previous epoch's order)
        sampler = self.batch_sampler
        self.generator = torch.Generator().manual_seed(sampler.seed + sampler.epoch)
        self._position = {"epoch": sampler.epoch, "batches": sampler.start}
        for batch in super().__iter__():
            self._position["batches"] += 1
            yield batch

    @property
    def position(self) -> dict[str, int]:
        """The epoch being read and how many of its batches were handed out."""
        sampler = self.batch_sampler
        return dict(getattr(self, "_position", {"epoch": sampler.epoch, "batches": sampler.start}))

    def resume_at(self, position: dict[str, Any]) -> None:
        """Start the next iteration at ``position`` (as returned by :attr:`position`)."""
        self.batch_sampler.epoch = int(position["epoch"])
        self.batch_sampler.start = int(position["batches"])


class PadCollate:
    """Stack images and right-pad token ids to the longest caption of the batch.

    Region items (:class:`RegionDataset`) are padded to the longest region set of the batch
    instead: ``regions``, ``region_mask`` (True for a real region) and ``boxes`` replace
    ``images``.
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(
        self, batch: list[tuple[torch.Tensor | RegionItem, torch.Tensor, int]]
    ) -> dict[str, torch.Tensor]:
        inputs, captions, indices = zip(*batch, strict=True)
        lengths = torch.tensor([len(c) for c in captions])
        tokens = torch.full((len(batch), int(lengths.max())), self.pad_id, dtype=torch.long)
        for row, caption in enumerate(captions):
            tokens[row, : len(caption)] = caption
        if isinstance(inputs[0], RegionItem):
            padded = pad_regions(inputs)
        else:  # (B, 3, S, S) uint8, or cached regions (B, R, D)
            padded = {"images": torch.stack(inputs)}
        return {
            **padded,
            "tokens": tokens,  # (B, L)
            "lengths": lengths,  # (B,)
            "indices": torch.tensor(indices),  # (B,) image index within the split
        }


def pad_regions(items: Sequence[RegionItem]) -> dict[str, torch.Tensor]:
    """Region sets of different sizes padded to the largest: features, mask and boxes.

    Filled in numpy: a row copy in torch is an intra-op parallel region, and on a busy
    machine its threads' hand-offs made a batch 300x slower (``make bench``'s region_loader).
    """
    counts = [len(item.features) for item in items]
    size, longest, dim = len(items), max(counts), items[0].features.shape[1]
    regions = np.zeros((size, longest, dim), dtype=np.float32)  # (B, N, D)
    mask = np.zeros((size, longest), dtype=bool)  # (B, N)
    boxes = np.zeros((size, longest, 4), dtype=np.float32)  # (B, N, 4)
    for row, (item, count) in enumerate(zip(items, counts, strict=True)):
        regions[row, :count] = item.features.numpy()
        mask[row, :count] = True
        boxes[row, :count] = item.boxes.numpy()
    return {
        "regions": torch.from_numpy(regions),
        "region_mask": torch.from_numpy(mask),
        "boxes": torch.from_numpy(boxes),
    }
