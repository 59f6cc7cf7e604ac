"""``python -m captioning.extract data=... out=DIR``: region features of every image of a data set.

Reads the data's records (all splits) as training does, finds each image's regions (a
torchvision detector, or the data's ``boxes_file``), pools them from the encoder's feature map
and writes ``DIR/<key>.npz`` plus ``DIR/extract.json``; see :mod:`captioning.extract`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from captioning import CONFIG_DIR
from captioning.data.datamodule import CaptionDataModule
from captioning.data.formats import SPLITS, BadData, DataError, ImageRecord
from captioning.data.images import ImageError, load_image
from captioning.extract.extractor import RegionExtractor
from captioning.extract.folder import RegionFolder, region_key
from captioning.extract.settings import RUN_OPTIONS, ExtractSettings

log = logging.getLogger(__name__)

THREADS = 4  # decoding and fsync free the GIL: images decode and files land meanwhile


def keyed_records(datamodule: CaptionDataModule, mode: str) -> dict[str, ImageRecord]:
    """Every split's records by region key; two images sharing a key is an error naming both."""
    keyed: dict[str, ImageRecord] = {}
    for split in SPLITS:
        for record in datamodule.records[split]:
            key = region_key(record, mode)
            first = keyed.setdefault(key, record)
            if first.path != record.path:
                way = "set extract.key=coco_id where the records carry COCO ids, or "
                raise DataError(
                    f"{first.path} and {record.path} would both be written as {key}.npz: "
                    f"{way if mode != 'coco_id' else ''}extract into one folder per image folder"
                )
    return keyed


def annotated_boxes(datamodule: CaptionDataModule) -> dict[str, list[dict[str, Any]]]:
    """``boxes_file``'s objects by image id, for ``extract.detector=boxes``."""
    if datamodule.boxes is None:
        boxes_file = datamodule.source.boxes_file
        raise DataError(
            f"extract.detector=boxes reads the data's boxes file (data.boxes_file="
            f"{boxes_file}), but {datamodule.root} has "
            + (f"no {boxes_file}" if boxes_file else "none")
            + "; set extract.detector=torchvision to detect the regions instead"
        )
    return datamodule.boxes


def _boxes_in_pixels(
    objects: list[dict[str, Any]], width: int, height: int, annotated_side: int
) -> np.ndarray:
    """An image's annotated boxes in its own pixels (the file's refer to a square image of
    ``annotated_side``, as the object metrics read them)."""
    boxes = np.asarray([o["box"] for o in objects], dtype=np.float64).reshape(-1, 4)
    return boxes * np.array([width, height, width, height]) / annotated_side


def _decode(record: ImageRecord, max_pixels: int | None) -> torch.Tensor | ImageError:
    try:
        return load_image(record.path, None, max_pixels)
    except ImageError as error:
        return error


def _decoded(
    todo: list[tuple[str, ImageRecord]],
    batch_size: int,
    pool: ThreadPoolExecutor,
    max_pixels: int | None,
) -> Iterator[list[tuple[str, torch.Tensor | ImageError]]]:
    """``(key, image or its error)`` in batches; the next batch decodes while one is used."""
    pending: list[tuple[str, Future]] = []
    for first in range(0, len(todo), batch_size):
        batch = todo[first : first + batch_size]
        submitted = [(key, pool.submit(_decode, record, max_pixels)) for key, record in batch]
        if pending:
            yield [(key, future.result()) for key, future in pending]
        pending = submitted
    if pending:
        yield [(key, future.result()) for key, future in pending]


def extract(cfg: DictConfig) -> dict[str, Any]:
    """Write the region files of every image of ``cfg.data`` into ``cfg.out``; returns counts."""
    options = OmegaConf.to_container(cfg.extract, resolve=True)
    assert isinstance(options, dict)
    run = {k: options.pop(k, None) for k in RUN_OPTIONS}
    settings = ExtractSettings.from_options(options)
    folder = RegionFolder(str(cfg.out), overwrite=bool(run["overwrite"]))
    folder.check_writable()  # before any weights are read

    # records only: the images are decoded here, once, and bad ones go through data.on_error
    datamodule = instantiate(
        cfg.data, _convert_="all", preload=False, check_images=False, cache_features=False
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    records = keyed_records(datamodule, settings.key)
    objects = annotated_boxes(datamodule) if settings.detector == "boxes" else None
    encoder = OmegaConf.to_container(cfg.encoder, resolve=True)
    assert isinstance(encoder, dict)
    if settings.encoder_from:
        log.info(
            "Pooling from the trained encoder of %s (not the encoder group's)",
            settings.encoder_from,
        )
    extractor = RegionExtractor(settings, encoder, run["device"] or "auto")

    errors = BadData(datamodule.source.on_error)
    counts = {"images": len(records), "written": 0, "skipped": 0, "empty": 0}
    start = time.perf_counter()
    with folder.locked():
        folder.prepare(extractor.record())
        todo = [(key, r) for key, r in records.items() if not folder.complete(key)]
        counts["skipped"] = len(records) - len(todo)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with (
            Progress(*columns, TimeRemainingColumn(), transient=True) as progress,
            ThreadPoolExecutor(THREADS) as decoding,
            ThreadPoolExecutor(THREADS) as writing,
        ):
            task = progress.add_task("extracting regions", total=len(todo))
            batches = _decoded(
                todo, int(run["batch_size"] or 1), decoding, datamodule.images.max_image_pixels
            )
            written: list[Future] = []
            for batch in batches:
                keys, images = [], []
                for key, image in batch:
                    if isinstance(image, ImageError):
                        errors(image.kind, str(image))
                    else:
                        keys.append(key)
                        images.append(image)
                boxes = None
                if objects is not None:
                    side = datamodule.annotation_image_size
                    boxes = [
                        _boxes_in_pixels(
                            objects.get(records[k].image_id, []), i.shape[-1], i.shape[-2], side
                        )
                        for k, i in zip(keys, images, strict=True)
                    ]
                found = extractor(images, boxes, keys) if images else []
                for future in written:  # the batch before: at most two batches in memory
                    future.result()  # a failed write (a full disk) stops the run here
                written = [
                    writing.submit(folder.write, k, r) for k, r in zip(keys, found, strict=True)
                ]
                counts["empty"] += sum(len(r.boxes) == 0 for r in found)
                counts["written"] += len(images)
                progress.update(task, advance=len(batch))
            for future in written:
                future.result()
    counts["bad"] = dict(errors.counts)
    log.info(
        "Regions of %d images in %s: %d written, %d already there, in %.1fs",
        counts["images"], folder.root, counts["written"], counts["skipped"],
        time.perf_counter() - start,
    )  # fmt: skip
    if errors.counts:
        log.warning("Skipped bad images (data.on_error=skip): %s", errors.summary())
    if counts["empty"]:
        log.warning("%d images have no regions (their files hold N=0)", counts["empty"])
    return counts


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="extract")
def main(cfg: DictConfig) -> None:
    extract(cfg)
