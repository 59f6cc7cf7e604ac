"""Evaluation entry point: ``python -m captioning.eval ckpt=PATH [data=...] [decoding.beam_size=3]``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from captioning import CONFIG_DIR
from captioning.browse import ReportCollector, build_entries, write_report
from captioning.checks import check_decoding_length, check_image_size, check_metric_settings
from captioning.decoding import DecodingConfig
from captioning.files import write_json
from captioning.models.regions import RegionEncoder
from captioning.module import CaptioningModule
from captioning.report import print_results
from captioning.wiring import attach_references, data_callbacks

log = logging.getLogger(__name__)

SPLITS = ("val", "test")
REPORT_SCORES = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "object_F1", "grounding")  # its header


def unknown_word_share(captions: list[list[list[str]]], words: set[str]) -> float:
    """The share of tokenised reference words (per image, per caption) outside ``words``."""
    tokens = [t for image in captions for caption in image for t in caption]
    return sum(t not in words for t in tokens) / max(len(tokens), 1)


def warn_if_other_data(module: CaptioningModule, datamodule: Any, split: str) -> None:
    """Say so when the scored data is not the data the checkpoint was trained on."""
    trained_on = module.hparams.get("data_fingerprint", "")
    if trained_on and datamodule.fingerprint != trained_on:
        log.warning(
            "%s was trained on other records (data fingerprint %s, this data %s): the scores "
            "are of a model on data it was not trained on",
            module.source,
            trained_on,
            datamodule.fingerprint,
        )
    share = unknown_word_share(datamodule.tokens[split], set(module.vocab.tokens))
    if share > 0:
        log.warning(
            "%.1f%% of the %s references' words are not in %s's vocabulary of %d words: the "
            "model can never generate them",
            100 * share,
            split,
            module.source,
            len(module.vocab),
        )


def _with_generator_target(data_cfg: Any) -> DictConfig:
    """A checkpoint's data config, with ``_target_`` on a ``generator`` saved without one.

    Checkpoints written before ``data.generator`` was a component hold only the Shapes
    settings there.
    """
    data_cfg = OmegaConf.create(data_cfg) if not isinstance(data_cfg, DictConfig) else data_cfg
    generator = data_cfg.get("generator")
    if generator is not None and "_target_" not in generator:
        target = {"generator": {"_target_": "captioning.data.shapes.ShapesGenerator"}}
        data_cfg = OmegaConf.merge(data_cfg, target)
    return data_cfg


def report_folder(cfg: DictConfig) -> Path | None:
    """Where ``report=true`` writes the report; refused up front, before any decoding, when it
    exists (a report never replaces files)."""
    if not cfg.get("report"):
        return None
    folder = Path(cfg.paths.output_dir) / "report"
    if folder.exists():
        raise FileExistsError(
            f"report=true: {folder} exists already and a report never replaces files; remove "
            "it or choose another run folder (hydra.run.dir=...)"
        )
    return folder


def decoding_name(decoding: DecodingConfig) -> str:
    """How the captions were decoded, in a few words (``beam 3, 3-best``)."""
    if decoding.sample:
        name = "sampling"
    elif decoding.beam_size == 1:
        name = "greedy"
    elif decoding.groups > 1:
        name = f"diverse beam {decoding.beam_size} ({decoding.groups} groups)"
    else:
        name = f"beam {decoding.beam_size}"
    return name + (f", {decoding.n_best}-best" if decoding.n_best > 1 else "")


def write_split_report(
    folder: Path,
    cfg: DictConfig,
    module: CaptioningModule,
    datamodule: Any,
    collector: ReportCollector,
) -> Path:
    """The report of the decoded split: every collected image with its captions, references,
    per-image scores and attention."""
    split = cfg.split
    encoder = module.captioner.encoder
    size = datamodule.image_size
    grid = None if isinstance(encoder, RegionEncoder) else tuple(encoder.grid(size, size))
    entries = build_entries(
        collector.decoded,
        module.predictions[split],
        datamodule.references(split),
        datamodule.image_ids(split),
        [record.path for record in datamodule.records[split]],
        grid,
        nbest=getattr(module, "predictions_nbest", {}).get(split),
        objects=datamodule.objects(split),
    )
    summary = {
        "checkpoint": str(cfg.ckpt),
        "split": split,
        "decoding": decoding_name(module.decoding_config),
        "images": f"{len(entries)} of {len(module.predictions[split])}",
        **{k: v for k, v in module.results[split].items() if k in REPORT_SCORES},
    }
    return write_report(
        folder,
        entries,
        title=f"{split} captions of {Path(str(cfg.ckpt)).name}",
        summary=summary,
        image_side=int(cfg.report_image_side),
    )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Decode a split with a checkpoint; write metrics.json and predictions.json (and, with
    ``decoding.n_best`` > 1, predictions_nbest.json: each image's captions, best first; with
    ``report=true`` the browsable report)."""
    if cfg.split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {cfg.split!r}")
    check_metric_settings(cfg.get("metrics"))  # SPICE's jars before any decoding
    folder = report_folder(cfg)
    collector = None
    if folder is not None:
        limit = cfg.get("report_images")
        collector = ReportCollector(cfg.split, None if limit is None else int(limit))
    module = CaptioningModule.from_checkpoint(cfg.ckpt)
    module.decoding = OmegaConf.to_container(cfg.decoding, resolve=True)
    model = module.hparams.model
    check_decoding_length("decoding.max_len", module.decoding_config.max_len, model, cfg.ckpt)
    data_cfg = _with_generator_target(cfg.get("data") or module.setting("data"))
    check_image_size(model, data_cfg.get("image_size"), cfg.ckpt)
    settings: dict[str, Any] = {"vocab": module.vocab.tokens}  # the checkpoint's words
    if cfg.get("batch_size"):
        settings["eval_batch_size"] = int(cfg.batch_size)
    datamodule = instantiate(data_cfg, _convert_="all", **settings)
    datamodule.prepare_data()
    datamodule.setup("test")
    warn_if_other_data(module, datamodule, cfg.split)
    metrics = OmegaConf.to_container(cfg.metrics, resolve=True) if cfg.get("metrics") else {}
    attach_references(module, datamodule, [cfg.split], metrics, spice_splits=[cfg.split])

    devices = OmegaConf.to_container(cfg.get("trainer") or {}, resolve=True)
    trainer = L.Trainer(
        **devices,
        logger=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[*data_callbacks(datamodule), *([collector] if collector is not None else [])],
    )  # under DDP each rank decodes its share of the batches; the metrics gather them all
    if cfg.split == "val":  # the validation loop scores val, the test loop test
        trainer.validate(module, dataloaders=datamodule.val_dataloader(), verbose=False)
    else:
        trainer.test(module, dataloaders=datamodule.test_dataloader(), verbose=False)
    scores = module.results[cfg.split]
    if not trainer.is_global_zero:
        return scores
    predictions = module.predictions[cfg.split]
    image_ids = datamodule.image_ids(cfg.split)

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "metrics.json", scores)
    results = [{"image_id": image_ids[i], "caption": c} for i, c in sorted(predictions.items())]
    write_json(output_dir / "predictions.json", results, indent=1)
    if module.decoding_config.n_best > 1:  # every image's n best, best first
        nbest = module.predictions_nbest[cfg.split]
        lists = [{"image_id": image_ids[i], "captions": c} for i, c in sorted(nbest.items())]
        write_json(output_dir / "predictions_nbest.json", lists, indent=1)
    if folder is not None and collector is not None:
        page = write_split_report(folder, cfg, module, datamodule, collector)
        log.info("report: %s", page)
    print_results(
        scores,
        predictions,
        image_ids,
        datamodule.references(cfg.split),
        samples=int(cfg.samples),
        title=f"{cfg.split} metrics of {cfg.ckpt} ({output_dir / 'metrics.json'})",
    )
    return scores


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
