"""Batch sampling (captions per image, length grouping), padding, the DataModule."""

from pathlib import Path

import torch

from captioning.data.dataset import CaptionBatchSampler, CaptionDataset, PadCollate

# 4 images with 2, 1, 3, 2 captions of varied length
CAPTIONS = [
    [[1, 5, 2], [1, 5, 6, 7, 2]],
    [[1, 6, 2]],
    [[1, 2], [1, 5, 5, 5, 5, 5, 2], [1, 7, 2]],
    [[1, 8, 9, 2], [1, 9, 2]],
]


def _dataset() -> CaptionDataset:
    images = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    return CaptionDataset([Path(f"{i}.png") for i in range(4)], CAPTIONS, 2, images)


def test_random_sampling_draws_one_caption_per_image_per_epoch() -> None:
    dataset = _dataset()
    sampler = CaptionBatchSampler(dataset, batch_size=3, sampling="random", seed=5)
    seen = []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        pairs = [p for batch in sampler for p in batch]
        assert sorted(dataset.pair_image[p] for p in pairs) == [0, 1, 2, 3]
        assert len(sampler) == 2
        seen.append(pairs)
    assert len({tuple(sorted(p)) for p in seen}) > 1  # different captions across epochs
    sampler.set_epoch(3)
    assert [p for batch in sampler for p in batch] == seen[3]  # same epoch, same order


def test_all_and_first_sampling() -> None:
    dataset = _dataset()
    every = CaptionBatchSampler(dataset, batch_size=4, sampling="all", shuffle=True)
    assert sorted(p for b in every for p in b) == list(range(8)) and len(every) == 2
    first = CaptionBatchSampler(dataset, batch_size=3, sampling="first", shuffle=False)
    assert list(first) == [[0, 2, 3], [6]]


def test_length_buckets_cut_padding() -> None:
    dataset = _dataset()
    sampler = CaptionBatchSampler(dataset, batch_size=2, sampling="all", bucket_batches=4)
    batches = list(sampler)
    lengths = [[int(dataset.pair_lengths[p]) for p in b] for b in batches]
    assert sorted(x for b in lengths for x in b) == sorted(
        len(c) for caps in CAPTIONS for c in caps
    )
    assert sorted(max(b) - min(b) for b in lengths) == [
        0,
        1,
        1,
        2,
    ]  # sorted neighbours share a batch


def test_pad_collate() -> None:
    dataset = _dataset()
    batch = PadCollate(pad_id=0)([dataset[1], dataset[2], dataset[4]])
    assert batch["tokens"].shape == (3, 7)
    assert batch["tokens"][1].tolist() == [1, 6, 2, 0, 0, 0, 0]
    assert batch["lengths"].tolist() == [5, 3, 7]
    assert batch["indices"].tolist() == [0, 1, 2]
    assert batch["images"].shape == (3, 3, 2, 2) and batch["images"][2].max() == 2
