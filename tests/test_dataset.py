"""Batch sampling (captions per image, length grouping), padding, the DataModule."""

from pathlib import Path

import lightning as L
import torch

from captioning.data.dataset import CaptionBatchSampler, CaptionDataset, CaptionLoader, PadCollate

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


def _order(epoch: int, start: int = 0) -> list[list[int]]:
    """The image indices of each batch of ``epoch`` (what a batch's ``indices`` holds)."""
    sampler = CaptionBatchSampler(_dataset(), batch_size=3, sampling="random", seed=5)
    sampler.set_epoch(epoch)
    images = sampler.dataset.pair_image
    return [[images[p] for p in batch] for batch in sampler][start:]


def _loader() -> CaptionLoader:
    sampler = CaptionBatchSampler(_dataset(), batch_size=3, sampling="random", seed=5)
    return CaptionLoader(sampler.dataset, batch_sampler=sampler, collate_fn=PadCollate(0))


class _Recorder(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, list[int]]] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen.append((self.current_epoch, batch["indices"].tolist()))
        return self.weight.sum() * 0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_sets_each_epoch_of_the_batch_sampler(tmp_path: Path) -> None:
    # Lightning only reaches loader.batch_sampler.sampler: without it every epoch replays epoch 0
    module = _Recorder()
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, train_dataloaders=_loader())
    for epoch in range(3):
        assert [b for e, b in module.seen if e == epoch] == _order(epoch)
    assert _order(0) != _order(1)


def test_loader_position_and_resume_at() -> None:
    loader = _loader()
    assert loader.position == {"epoch": 0, "batches": 0}
    batches = iter(loader)
    next(batches)
    assert loader.position == {"epoch": 0, "batches": 1}
    resumed = _loader()
    resumed.resume_at({"epoch": 1, "batches": 1})
    assert [b["indices"].tolist() for b in resumed] == _order(1, start=1)
    assert resumed.position == {"epoch": 1, "batches": 2}
    resumed.batch_sampler.set_epoch(2)  # the next epoch starts from its first batch
    assert [b["indices"].tolist() for b in resumed] == _order(2)
