"""Caption images: ``captioning-caption ckpt=PATH images=FILE_OR_DIR`` (or ``python -m captioning.caption``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from captioning import CONFIG_DIR
from captioning.checks import check_decoding_length
from captioning.data.formats import DataError
from captioning.data.images import load_image
from captioning.files import strict, write_atomic
from captioning.models.regions import RegionEncoder, Regions
from captioning.module import CaptioningModule
from captioning.viz import attention_figure

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's limit, data.max_image_pixels' default


def list_images(target: str | Path) -> list[Path]:
    path = Path(target).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    raise FileNotFoundError(f"images={target}: no such file or folder")


def _batches(
    paths: list[Path], image_size: int, batch_size: int, max_pixels: int | None
) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """Batches of the images that decode; one bad file is reported and never stops the rest."""
    names, tensors = [], []
    for path in paths:
        try:
            tensors.append(load_image(path, image_size, max_pixels, "max_image_pixels"))
            names.append(path)
        except DataError as error:
            log.warning("skipped %s", error)
        if len(names) == batch_size:
            yield names, torch.stack(tensors)
            names, tensors = [], []
    if names:
        yield names, torch.stack(tensors)


def figure_paths(files: list[Path], folder: Path) -> dict[Path, Path]:
    """One figure file per image (``photo.jpg`` and ``photo.png`` do not share one); an
    existing file is never replaced: the run stops first, naming it."""
    paths: dict[Path, Path] = {}
    taken: set[str] = set()
    for path in files:
        name = f"{path.stem}_attention.png"
        if name in taken:
            name = f"{path.stem}_{path.suffix.lstrip('.')}_attention.png"
        taken.add(name)
        paths[path] = folder / name
    existing = [p for p in paths.values() if p.exists()]
    if existing:
        raise FileExistsError(
            f"figure_dir={folder} already holds {existing[0].name}"
            + (f" and {len(existing) - 1} more figures" if len(existing) > 1 else "")
            + ": choose another figure_dir (the default is a fresh run folder) or figures=false"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return paths


class RegionInputs:
    """Raw photos to padded region batches for a checkpoint trained on region files: the
    extraction the files were written with (``extraction`` in its config) runs on the fly.

    With ``detector=boxes`` (Shapes' oracle boxes) an image's boxes come from ``boxes_file``
    (default: the checkpoint's data ``boxes.json``), found by the image's file name.
    """

    def __init__(self, module: CaptioningModule, boxes_file: str | None, device: torch.device):
        from captioning.extract import RegionExtractor  # only region checkpoints need it

        settings = module.hparams.get("config", {}).get("extraction")
        if not settings:
            raise ValueError(
                f"{module.source} was trained on region files without extraction settings "
                "(precomputed features, no extract.json beside them): it cannot caption raw "
                "images; extract their regions as its files were made and evaluate on those"
            )
        self.extractor = RegionExtractor.from_settings(settings, device)
        self.boxes: dict[str, Any] | None = None
        self.annotated_side = int(module.setting("data.image_size"))
        if settings.get("detector") == "boxes":
            path = Path(boxes_file) if boxes_file else self._data_boxes(module)
            try:
                self.boxes = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                raise DataError(
                    f"boxes_file={path}: the oracle boxes the regions were extracted from "
                    f"cannot be read ({error})"
                ) from None

    @staticmethod
    def _data_boxes(module: CaptioningModule) -> Path:
        data = module.setting("data")
        name = data.get("boxes_file") or "boxes.json"
        return Path(str(data.get("root", "."))).expanduser() / name

    def __call__(self, paths: list[Path], images: torch.Tensor) -> tuple[list[Path], Regions]:
        """The regions of ``paths`` (those with boxes, for oracle boxes) as a padded batch."""
        kept, boxes = [], []
        for path in paths:
            if self.boxes is None:
                kept.append(path)
                continue
            objects = self.boxes.get(path.name)
            if objects is None:
                log.warning("skipped %s: no boxes for it in the oracle boxes file", path)
                continue
            kept.append(path)
            boxes.append(np.asarray([o["box"] for o in objects], dtype=np.float64).reshape(-1, 4))
        if not kept:
            return [], Regions(torch.zeros(0, 1, 1), torch.zeros(0, 1, dtype=torch.bool))
        originals = [load_image(path, None) for path in kept]
        if self.boxes is not None:  # the file's boxes refer to the square annotated image
            boxes = [
                b * np.array([i.shape[-1], i.shape[-2]] * 2) / self.annotated_side
                for b, i in zip(boxes, originals, strict=True)
            ]
        found = self.extractor(originals, boxes if self.boxes is not None else None)
        longest = max(1, *(len(r.feat) for r in found))
        width = found[0].feat.shape[1]
        features = torch.zeros(len(found), longest, width)
        mask = torch.zeros(len(found), longest, dtype=torch.bool)
        normalised = torch.zeros(len(found), longest, 4)
        for row, regions in enumerate(found):
            n = len(regions.feat)
            features[row, :n] = torch.from_numpy(regions.feat.astype(np.float32))
            mask[row, :n] = True
            scale = np.array([regions.image_w, regions.image_h] * 2, dtype=np.float32)
            normalised[row, :n] = torch.from_numpy(regions.boxes / scale).clamp(0, 1)
        empty = [path.name for path, r in zip(kept, found, strict=True) if not len(r.feat)]
        if empty:
            raise DataError(f"no regions were found in {', '.join(empty)}")
        return kept, Regions(features, mask, normalised)


@torch.no_grad()
def caption_images(cfg: DictConfig) -> list[dict[str, Any]]:
    """Caption every image; returns one record per image (file, captions, scores)."""
    module = CaptioningModule.from_checkpoint(cfg.ckpt).eval()
    module.decoding = OmegaConf.to_container(cfg.decoding, resolve=True)
    decoding = module.decoding_config
    check_decoding_length("decoding.max_len", decoding.max_len, module.hparams.model, cfg.ckpt)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device)
    data_config = module.setting("data")
    image_size = int(module.setting("data.image_size"))
    max_pixels = cfg.get("max_image_pixels")
    if max_pixels is None:  # the limit the checkpoint was trained under
        max_pixels = data_config.get("max_image_pixels", DEFAULT_MAX_PIXELS)
    on_regions = isinstance(module.captioner.encoder, RegionEncoder)
    regions_of = RegionInputs(module, cfg.get("boxes_file"), device) if on_regions else None
    grid = None if on_regions else module.captioner.encoder.grid(image_size, image_size)
    files = list_images(cfg.images)
    figures = figure_paths(files, Path(cfg.figure_dir)) if cfg.figures else {}
    records = []
    vocab = module.vocab
    for paths, images in _batches(files, image_size, int(cfg.batch_size), max_pixels):
        boxes = None
        if regions_of is not None:
            kept, inputs = regions_of(paths, images)
            images = images[[paths.index(p) for p in kept]]
            paths, boxes = kept, inputs.boxes
            if not paths:
                continue
            regions, mask = module.captioner.encode_masked(inputs.to(device))
        else:
            regions, mask = module.captioner.encode_masked(module.to_float(images.to(device)))
        out = module.search(regions, mask=mask)  # beam, diverse beam or samples: n_best each
        for row, path in enumerate(paths):
            captions = [
                vocab.decode(out.tokens[row, n].tolist()) for n in range(out.tokens.shape[1])
            ]
            record = {
                "image": path.name,
                "captions": captions,
                "scores": [round(float(s), 4) for s in out.scores[row]],
            }
            if cfg.figures:
                words = vocab.decode_ids(out.tokens[row, 0].tolist())
                figure = attention_figure(
                    images[row].permute(1, 2, 0).numpy(), words, out.weights[row, 0].cpu(), grid,
                    boxes=None if boxes is None else boxes[row],
                )  # fmt: skip
                record["figure"] = str(figures[path])
                write_atomic(figures[path], lambda out, figure=figure: figure.save(out, "PNG"))
            records.append(record)
            if cfg.json:
                print(json.dumps(strict(record), allow_nan=False))
            else:
                for caption in captions:
                    print(f"{path.name}: {caption}")
    if not records:
        raise DataError(
            f"images={cfg.images}: nothing was captioned ({len(files)} file(s), each skipped "
            "with a warning above that names it and why)"
        )
    return records


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="caption")
def main(cfg: DictConfig) -> None:
    caption_images(cfg)


if __name__ == "__main__":
    main()
