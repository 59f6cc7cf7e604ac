"""Evaluation entry point: ``python -m captioning.eval ckpt=PATH [data=...] [decoding.beam_size=3]``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from captioning import CONFIG_DIR
from captioning.module import CaptioningModule
from captioning.report import print_results

log = logging.getLogger(__name__)

SPLITS = ("val", "test")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Decode a split with a checkpoint; write metrics.json and predictions.json."""
    if cfg.split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {cfg.split!r}")
    module = CaptioningModule.from_checkpoint(cfg.ckpt)
    module.decoding = OmegaConf.to_container(cfg.decoding, resolve=True)
    data_cfg = cfg.get("data") or module.hparams.config["data"]
    datamodule = instantiate(data_cfg, _convert_="all")
    datamodule.vocab = module.vocab  # encode references with the checkpoint's words
    if cfg.get("batch_size"):
        datamodule.eval_batch_size = int(cfg.batch_size)
    datamodule.prepare_data()
    datamodule.setup("test")
    if cfg.split == "val":  # the test loop then decodes and scores the val split
        datamodule.test_dataloader = datamodule.val_dataloader
    module.test_split = cfg.split

    devices = OmegaConf.to_container(cfg.get("trainer") or {}, resolve=True)
    trainer = L.Trainer(
        **devices, logger=False, enable_model_summary=False, use_distributed_sampler=False
    )  # under DDP each rank decodes its share of the batches; the metrics gather them all
    trainer.test(module, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return module.results["test"]
    scores = module.results["test"]
    predictions = module.predictions["test"]
    image_ids = datamodule.image_ids(cfg.split)

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(scores, indent=2) + "\n")
    results = [{"image_id": image_ids[i], "caption": c} for i, c in sorted(predictions.items())]
    (output_dir / "predictions.json").write_text(json.dumps(results, indent=1) + "\n")
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
