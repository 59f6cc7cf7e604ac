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
from captioning.checks import check_decoding_length, check_image_size, check_metric_settings
from captioning.files import write_json
from captioning.module import CaptioningModule
from captioning.report import print_results
from captioning.wiring import attach_references, data_callbacks

log = logging.getLogger(__name__)

SPLITS = ("val", "test")


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


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Decode a split with a checkpoint; write metrics.json and predictions.json (and, with
    ``decoding.n_best`` > 1, predictions_nbest.json: each image's captions, best first)."""
    if cfg.split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {cfg.split!r}")
    check_metric_settings(cfg.get("metrics"))  # SPICE's jars before any decoding
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
        callbacks=data_callbacks(datamodule),
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
