"""Torch datasets over image records, and the padding collate function."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from captioning.data.images import load_image

SAMPLING = ("random", "all", "first")


class CaptionDataset(Dataset):
    """Samples ``(image uint8 (3,S,S), token ids (L,), image index)``.

    Args:
        paths: one image file per image index.
        captions: encoded captions per image (``<bos> ... <eos>`` ids).
        image_size: side the images are resized to.
        sampling: ``random`` (one random caption per image per epoch), ``all`` (every
            caption is a sample) or ``first`` (the first caption; for evaluation).
        images: the decoded images, when the split was preloaded into memory.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        captions: Sequence[Sequence[Sequence[int]]],
        image_size: int,
        sampling: str = "random",
        images: torch.Tensor | None = None,
    ) -> None:
        if sampling not in SAMPLING:
            raise ValueError(f"data.captions_per_image must be one of {SAMPLING}, got {sampling!r}")
        self.paths = list(paths)
        self.captions = [[torch.tensor(c, dtype=torch.long) for c in caps] for caps in captions]
        self.image_size = image_size
        self.sampling = sampling
        self.images = images
        # (image index, caption index) per sample when every caption is a sample
        self.pairs = (
            [(i, j) for i, caps in enumerate(self.captions) for j in range(len(caps))]
            if sampling == "all"
            else None
        )

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs is not None else len(self.paths)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self.pairs is not None:
            index, choice = self.pairs[item]
        else:
            index = item
            n = len(self.captions[index])
            choice = int(torch.randint(n, ()).item()) if self.sampling == "random" else 0
        if self.images is not None:
            image = self.images[index]
        else:
            image = load_image(self.paths[index], self.image_size)
        return image, self.captions[index][choice], index


class PadCollate:
    """Stack images and right-pad token ids to the longest caption of the batch."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor, int]]) -> dict[str, torch.Tensor]:
        images, captions, indices = zip(*batch, strict=True)
        lengths = torch.tensor([len(c) for c in captions])
        tokens = torch.full((len(batch), int(lengths.max())), self.pad_id, dtype=torch.long)
        for row, caption in enumerate(captions):
            tokens[row, : len(caption)] = caption
        return {
            "images": torch.stack(images),  # (B, 3, S, S) uint8
            "tokens": tokens,  # (B, L)
            "lengths": lengths,  # (B,)
            "indices": torch.tensor(indices),  # (B,) image index within the split
        }
