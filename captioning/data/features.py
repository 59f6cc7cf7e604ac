"""Feature cache for frozen encoders: extract region features once, train on them after.

With ``data.cache_features=true`` every split's images go through the frozen encoder once;
the regions ``(N, R, D)`` are stored as fp16 ``.npy`` files (memory-mapped when read, so
loader workers share the page cache and nothing is unpickled). The cache folder is keyed by
the encoder's config, its structure, a hash of its weights, the image size and the image list, so a
changed encoder or data set writes a new one. Extraction shows a progress bar and resumes
where it stopped: ``<split>.done`` holds the number of images already written.

One process extracts a cache folder at a time (a file lock beside it); the others wait and
then read what it wrote. The ``.npy`` file is allocated whole before the first write, so a
full disk is a clear error up front, not a SIGBUS from a write through the memory map.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from captioning.data.cache import is_no_space, locked, no_space_message, remove_stale_temporaries
from captioning.data.formats import DataError
from captioning.data.images import load_images
from captioning.files import write_atomic

log = logging.getLogger(__name__)


class FeatureCacheError(DataError):
    """The feature cache cannot be used with this configuration, or cannot be written."""


def _no_space(path: Path, needed: int | None = None) -> FeatureCacheError:
    free = shutil.disk_usage(path.parent).free / 2**20
    size = f"{needed / 2**20:.1f} MiB needed, " if needed is not None else ""
    return FeatureCacheError(
        f"{no_space_message(path)} ({size}{free:.1f} MiB free); free space, set "
        "paths.cache_dir to a disk with room, or data.cache_features=false"
    )


def _reserve(path: Path) -> None:
    """Allocate every block of ``path`` now; raises ENOSPC when the disk cannot hold it.

    ``open_memmap`` leaves a sparse file, and a write through the map that finds no free block
    kills the process with SIGBUS; reserved blocks cannot run out.
    """
    size = path.stat().st_size
    if hasattr(os, "posix_fallocate"):
        try:
            with open(path, "r+b") as handle:
                os.posix_fallocate(handle.fileno(), 0, size)
            return
        except OSError as error:
            if is_no_space(error) or error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
    # a file system that cannot reserve: the free space is the best check left
    missing = size - path.stat().st_blocks * 512
    if missing > shutil.disk_usage(path.parent).free:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _read_done(done_file: Path) -> int:
    """Images already written; a missing, empty or torn marker counts as none."""
    try:
        return int(done_file.read_text())
    except (OSError, ValueError):
        return 0


def _write_done(done_file: Path, count: int) -> None:
    try:
        write_atomic(done_file, lambda out: out.write(str(count).encode()))
    except OSError as error:
        if is_no_space(error):
            raise _no_space(done_file) from error
        raise


def check_frozen(encoder: nn.Module) -> None:
    trainable = [name for name, p in encoder.named_parameters() if p.requires_grad]
    if trainable:
        raise FeatureCacheError(
            "data.cache_features=true needs a frozen encoder, but "
            f"{len(trainable)} encoder parameters train (first: {trainable[0]}); "
            "set encoder.finetune=none (torchvision encoders) or data.cache_features=false"
        )


def weights_digest(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()[:16]


def cache_key(
    encoder: nn.Module, config: dict[str, Any], image_size: int, paths: dict[str, Sequence[Path]]
) -> str:
    payload = {
        "encoder": config,
        "structure": repr(encoder),  # catches what a config alone may not say (pooling, ...)
        "weights": weights_digest(encoder),
        "image_size": image_size,
        "images": {
            split: hashlib.sha256("\n".join(map(str, p)).encode()).hexdigest()
            for split, p in sorted(paths.items())
        },
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


@torch.no_grad()
def extract(
    encoder: nn.Module,
    paths: Sequence[Path],
    image_size: int,
    out: Path,
    device: torch.device,
    batch_size: int = 64,
    description: str = "features",
) -> None:
    """Write ``encoder`` regions of every image to ``out`` (fp16 ``.npy``), resumably."""
    done_file = out.with_suffix(".done")
    done = _read_done(done_file) if out.is_file() else 0
    if done >= len(paths):
        return
    was_training = encoder.training
    encoder.eval()
    probe = encoder(torch.zeros(1, 3, image_size, image_size, device=device))  # (1, R, D)
    shape = (len(paths), *probe.shape[1:])
    needed = int(np.prod(shape)) * np.dtype(np.float16).itemsize
    try:
        if done == 0:
            features = np.lib.format.open_memmap(out, mode="w+", dtype=np.float16, shape=shape)
        else:
            features = np.load(out, mmap_mode="r+")
            if features.shape != shape:
                raise FeatureCacheError(f"{out}: shape {features.shape} != expected {shape}")
            log.info("Resuming feature extraction at image %d of %d (%s)", done, len(paths), out)
        _reserve(out)  # resumed files too: an older run may have left a sparse one
    except OSError as error:
        if done == 0:  # made by this call: a full disk must not keep a file that holds nothing
            out.unlink(missing_ok=True)
            done_file.unlink(missing_ok=True)
        if is_no_space(error):
            raise _no_space(out, needed) from error
        raise
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeRemainingColumn(), transient=True) as progress:
        task = progress.add_task(description, total=len(paths), completed=done)
        for start in range(done, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            images = load_images(list(chunk), image_size).to(device)
            regions = encoder(images.float().div_(255))  # (b, R, D)
            features[start : start + len(chunk)] = regions.to(torch.float16).cpu().numpy()
            features.flush()
            try:
                _write_done(done_file, start + len(chunk))  # after the flush: resumable
            except FeatureCacheError:
                if _read_done(done_file) == 0:  # no progress recorded to resume: free the space
                    out.unlink(missing_ok=True)
                raise
            progress.update(task, advance=len(chunk))
    del features
    encoder.train(was_training)


class FeatureCache:
    """The cache folder of one encoder + data set; ``prepare`` fills it, ``path`` names a split.

    Args:
        root: the folder holding cache folders (``paths.cache_dir`` or ``<data root>/.cache``).
        encoder: the frozen encoder.
        config: the encoder's config (part of the key).
        image_size: the side images are resized to.
        paths: image files per split.
    """

    def __init__(
        self,
        root: Path,
        encoder: nn.Module,
        config: dict[str, Any],
        image_size: int,
        paths: dict[str, Sequence[Path]],
    ) -> None:
        check_frozen(encoder)
        self.encoder = encoder
        self.image_size = image_size
        self.paths = paths
        self.folder = root / f"features-{cache_key(encoder, config, image_size, paths)}"

    def path(self, split: str) -> Path:
        return self.folder / f"{split}.npy"

    def complete(self) -> bool:
        return all(
            self.path(split).is_file()
            and _read_done(self.path(split).with_suffix(".done")) == len(paths)
            for split, paths in self.paths.items()
        )

    def prepare(self, device: torch.device, batch_size: int = 64) -> None:
        """Extract what is missing; waits while another process extracts the same folder."""
        if self.complete():
            log.info("Region features from the cache %s", self.folder)
            return
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        lock = self.folder.parent / f".{self.folder.name}.lock"
        with locked(lock, f"extracting region features into {self.folder}"):
            if self.complete():  # the process we waited for wrote them
                log.info("Region features from the cache %s", self.folder)
                return
            self.folder.mkdir(exist_ok=True)
            remove_stale_temporaries(self.folder)
            original = next(self.encoder.parameters()).device
            self.encoder.to(device)
            try:
                for split, paths in self.paths.items():
                    extract(
                        self.encoder,
                        paths,
                        self.image_size,
                        self.path(split),
                        device,
                        batch_size,
                        description=f"encoding {split} images",
                    )
            finally:
                self.encoder.to(original)
        log.info("Region features cached in %s", self.folder)


class MappedFeatures:
    """Row access to a cached ``.npy`` file, opened lazily in each loader worker."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._array: np.ndarray | None = None

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return torch.from_numpy(np.array(self._array[index]))  # (R, D) float16

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_array": None}  # workers reopen the map, never copy it
