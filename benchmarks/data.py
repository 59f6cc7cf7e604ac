"""Data benchmarks: loader throughput, the frozen-encoder feature cache, the region loader.

The first two run on a small Shapes set (64 px PNGs) upscaled to 224 px on load, so decoding
and resizing cost what they cost for a real data set at that size; the region loader reads
bottom-up-sized region files (36 x 2048 fp16 per image) that it writes into a temporary folder.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from benchmarks.models import node, train_config
from benchmarks.timing import seconds_per_call
from captioning.data.datamodule import CaptionDataModule
from captioning.data.layouts import read_dataset
from captioning.data.shapes import ShapesConfig, ensure_shapes
from captioning.module import CaptioningModule


def bench_shapes(cfg: DictConfig, num_train: int) -> Path:
    root = Path(cfg.data_dir) / f"shapes_bench_{num_train}"
    return ensure_shapes(root, ShapesConfig(num_train=num_train, num_val=8, num_test=8))


def shapes_datamodule(
    root: Path,
    batch_size: int,
    num_workers: int,
    cache_dir: Path | None = None,
    image_size: int = 224,
) -> CaptionDataModule:
    data = CaptionDataModule(
        root=str(root),
        reader=partial(read_dataset),
        layout="kaggle",
        image_size=image_size,
        batch_size=batch_size,
        eval_batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,  # started once, as in training
        captions_per_image="random",
        check_images=False,
        cache_dir=str(cache_dir) if cache_dir else None,
    )
    data.setup()
    return data


def bench_loader(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Images/s of the training loader (decode + resize to 224 px) with 0 and 2 workers."""
    root = bench_shapes(cfg, int(cfg.loader_images))
    rates = {}
    for workers in (0, 2):
        loader = shapes_datamodule(root, int(cfg.batch_size), workers).train_dataloader()
        counted: list[int] = []

        def epoch(loader=loader, counted=counted) -> None:
            counted.append(sum(len(batch["indices"]) for batch in loader))

        seconds = seconds_per_call(epoch)  # after a warm-up epoch: page cache, worker start-up
        rates[workers] = counted[-1] / seconds
    return {
        "ratio": rates[2] / rates[0],
        "images_per_s_0_workers": rates[0],
        "images_per_s_2_workers": rates[2],
        "image_size": 224,
        "images": int(cfg.loader_images),
        "note": "ratio = 2 workers / 0 workers (persistent, started in the warm-up epoch)",
    }


def bench_feature_cache(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """A training epoch with a frozen ResNet-50 on cached regions against recomputing it."""
    root = bench_shapes(cfg, int(cfg.cache_images))
    # a fresh folder times the extraction every run; only that folder, made here, is removed
    (Path(cfg.data_dir) / ".cache").mkdir(parents=True, exist_ok=True)
    cache_dir = Path(tempfile.mkdtemp(prefix="bench_features-", dir=Path(cfg.data_dir) / ".cache"))
    try:
        return _bench_feature_cache(cfg, device, root, cache_dir)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def _bench_feature_cache(
    cfg: DictConfig, device: torch.device, root: Path, cache_dir: Path
) -> dict[str, Any]:
    data = shapes_datamodule(root, int(cfg.cache_batch_size), 0, cache_dir)
    model = node(
        train_config("encoder=resnet50", "encoder.pretrained=false", "encoder.finetune=none"),
        "model",
    )
    torch.manual_seed(0)
    module = CaptioningModule(
        model=model,
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3},
        scheduler=None,
        loss={},
        decoding={},
        vocab=data.vocab.tokens,
    ).to(device)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)

    def epoch() -> None:
        module.train()
        for batch in data.train_dataloader():
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            loss = module.model_step(batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    recompute_s = seconds_per_call(epoch, warmup=0)
    extract_s = seconds_per_call(
        lambda: data.use_feature_cache(module.captioner.encoder, model["encoder"], device),
        warmup=0,
    )
    cached_s = seconds_per_call(epoch)  # after a warm-up epoch of the cached path (page cache)
    return {
        "ratio": recompute_s / cached_s,
        "recompute_epoch_s": recompute_s,
        "cached_epoch_s": cached_s,
        "extract_once_s": extract_s,
        "images": int(cfg.cache_images),
        "encoder": "resnet50 frozen, 224 px (7x7x2048 regions)",
        "note": "extract_once_s: all splits, once; later runs with the same encoder skip it",
    }


def write_region_files(root: Path, images: int, regions: int, dim: int) -> None:
    """A folder-layout data set of ``images`` captioned images with no image files, and their
    regions as ``feats/<stem>.npz`` (``feat`` fp16, ``boxes``, ``image_w``, ``image_h``)."""
    (root / "feats").mkdir(parents=True)
    rng = np.random.default_rng(0)
    with (root / "captions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption", "split"])
        for i in range(images):
            split = "val" if i == 0 else "test" if i == 1 else "train"
            writer.writerow([f"{i}.jpg", f"a thing number {i % 50}", split])
            features = rng.random((regions, dim), dtype=np.float32).astype(np.float16)
            corners = rng.uniform(0, 200, (regions, 2))
            boxes = np.concatenate([corners, corners + 100], axis=1).astype(np.float32)
            # uncompressed: random values do not compress, and writing stays quick
            np.savez(
                root / "feats" / f"{i}.npz", feat=features, boxes=boxes, image_w=320, image_h=320
            )


def bench_region_loader(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Region sets/s of the training loader on ``<key>.npz`` files with 0 and 2 workers."""
    images, regions, dim = int(cfg.region_images), int(cfg.region_count), int(cfg.region_dim)
    root = Path(tempfile.mkdtemp(prefix="bench_regions-"))
    try:
        start = time.perf_counter()
        write_region_files(root, images, regions, dim)
        write_s = time.perf_counter() - start
        rates, setup_s = {}, 0.0
        for workers in (0, 2):
            start = time.perf_counter()
            data = CaptionDataModule(
                root=str(root),
                reader=partial(read_dataset),
                layout="folder",
                region_features="feats",
                batch_size=int(cfg.batch_size),
                num_workers=workers,
                persistent_workers=workers > 0,  # started once, as in training
                captions_per_image="random",
                cache=False,
            )
            data.setup()
            setup_s = time.perf_counter() - start  # every file's headers checked
            loader = data.train_dataloader()
            counted: list[int] = []

            def epoch(loader=loader, counted=counted) -> None:
                counted.append(sum(len(batch["indices"]) for batch in loader))

            # after a warm-up epoch (page cache, workers); fewer repeats than bench.repeats:
            # an epoch here takes seconds
            seconds = seconds_per_call(epoch, repeats=int(cfg.region_repeats))
            rates[workers] = counted[-1] / seconds
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "ratio": rates[2] / rates[0],
        "regions_per_s_workers_0": rates[0] * regions,
        "regions_per_s_workers_2": rates[2] * regions,
        "images_per_s_workers_0": rates[0],
        "images_per_s_workers_2": rates[2],
        "setup_check_s": setup_s,
        "write_s": write_s,
        "images": images,
        "regions_per_image": regions,
        "region_dim": dim,
        "note": "ratio = 2 workers / 0 workers (persistent, started in the warm-up epoch); "
        "npz of fp16 feat + boxes + image size, read per image and served as fp32",
    }
