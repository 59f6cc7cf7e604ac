"""Training entry point: ``python -m captioning.train [group=option] [key=value]``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from captioning import CONFIG_DIR
from captioning.callbacks import StopOnDivergence
from captioning.checks import check_encoder_input, check_run_config, is_region_encoder
from captioning.files import write_json
from captioning.module import CaptioningModule, read_checkpoint
from captioning.provenance import RUN_FILE, run_info
from captioning.report import print_results
from captioning.resume import (
    AtomicCheckpointIO,
    RNGState,
    check_run_folder,
    remember_wandb_run,
    remove_stale_temporaries,
    resume_checkpoint,
    wandb_run_id,
)
from captioning.wiring import attach_references, data_callbacks, scst_reward

log = logging.getLogger(__name__)

TEST_METRICS_FILE = "test_metrics.json"
METRICS_FILE = "final_metrics.json"  # val/ and test/ keys of the last validation and the test


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved run config without Hydra's own node (kept in every checkpoint)."""
    return _container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))


def initialise_from(
    module: CaptioningModule, source: CaptioningModule, path: str, fingerprint: str
) -> None:
    """Start from the weights of ``source``, read from ``path`` (only: a fresh optimizer and
    schedule, epoch 0)."""
    if source.vocab != module.vocab:
        raise ValueError(
            f"init_from={path}: its vocabulary ({len(source.vocab)} words) differs from this "
            "data's; start from a checkpoint trained on the same data"
        )
    if source.hparams.get("data_fingerprint") not in ("", fingerprint):
        log.warning("init_from=%s was trained on other records (data fingerprint differs)", path)
    try:
        module.captioner.load_state_dict(source.captioner.state_dict())
    except RuntimeError as error:
        first = str(error).split("\n\t")[1:2] or [str(error)[:200]]
        raise ValueError(
            f"init_from={path}: its model does not match this config's ({first[0].strip()}); "
            "use the encoder/attention/decoder settings it was trained with"
        ) from None
    log.info("Weights initialised from %s", path)


FILLED_AT_START = ("encoder.feature_dim",)  # null in a config: filled from the data at start-up
NO_REFINER = "captioning.models.refiners.NoRefiner"  # what a checkpoint without model.refiner had


def _differences(ours: Any, theirs: Any, prefix: str) -> list[str]:
    """Dotted keys whose values differ between two config trees, with both values."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        keys = sorted(set(ours) | set(theirs))
        return [d for k in keys for d in _differences(ours.get(k), theirs.get(k), f"{prefix}.{k}")]
    if ours is None and prefix.endswith(FILLED_AT_START):
        return []
    if theirs is None and prefix == "model.refiner" and (ours or {}).get("_target_") == NO_REFINER:
        return []  # a run from before refiners existed: refiner=none is the model it had
    return [] if ours == theirs else [f"{prefix}={theirs!r} there, {ours!r} here"]


def check_continued_checkpoint(path: str, cfg: DictConfig) -> None:
    """Before any data set-up: the checkpoint a run continues is readable and of this model."""
    checkpoint = read_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    if "optimizer_states" not in checkpoint:
        raise ValueError(f"{path}: not a resumable checkpoint (no optimizer state); use init_from")
    differences = _differences(_container(cfg.model), hparams["model"], "model")
    if differences:
        raise ValueError(
            f"{path} was trained with another model config ({'; '.join(differences[:3])}); "
            "continue it with the settings it was trained with, or start a new run_name "
            "(init_from=PATH starts a new run from its weights when only the training differs)"
        )


def _task_overrides() -> list[str] | None:
    """The command-line overrides of this Hydra run, or None outside one."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return None


def _is_wandb(node: Any) -> bool:
    return "WandbLogger" in str(node.get("_target_", ""))


def _start_run(cfg: DictConfig, output_dir: Path) -> str | None:
    """Check the run folder and the config, record the run; the checkpoint to resume, if any."""
    check_run_folder(output_dir, cfg.get("resume"), cfg.get("ckpt_path"), cfg.get("overwrite"))
    check_run_config(run_config(cfg))
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output_dir)
    ckpt_path = resume_checkpoint(cfg.get("resume"), cfg.get("ckpt_path"), output_dir)
    if ckpt_path:
        check_continued_checkpoint(ckpt_path, cfg)
    if not (ckpt_path and (output_dir / RUN_FILE).is_file()):  # a resumed run keeps its own
        write_json(output_dir / RUN_FILE, run_info("train", _task_overrides()))
    return ckpt_path


EXTRACTION_FILE = "extract.json"  # written by captioning.extract beside the region files


def prepare_regions(cfg: DictConfig, datamodule: Any) -> None:
    """``encoder=regions`` with ``encoder.feature_dim=null``: the width of the data's region
    files (after set-up); a width that disagrees with them is an error naming both. Region
    files written by ``captioning.extract`` have their extraction settings kept in the run
    config (``extraction``), so that ``captioning-caption`` can extract a raw photo's regions
    the same way."""
    if not is_region_encoder(_container(cfg.encoder)):
        return
    settings = Path(str(cfg.data.region_features)).expanduser()
    if not settings.is_absolute():
        settings = Path(str(cfg.data.root)).expanduser() / settings
    settings = settings / EXTRACTION_FILE
    if settings.is_file():
        with open_dict(cfg):
            cfg.extraction = json.loads(settings.read_text())
    width = int(datamodule.region_dim)
    given = cfg.encoder.get("feature_dim")
    if given is None:
        with open_dict(cfg):
            cfg.encoder.feature_dim = width
        log.info("encoder.feature_dim=%d, the width of data.region_features", width)
    elif int(given) != width:
        raise ValueError(
            f"encoder.feature_dim={given} but data.region_features={cfg.data.region_features} "
            f"holds {width}-d region features: set encoder.feature_dim={width} (or null)"
        )
    if cfg.encoder.get("box_embed") and not datamodule.has_boxes:
        raise ValueError(
            f"encoder.box_embed=true needs region boxes, and data.region_features="
            f"{cfg.data.region_features} has none: give data.region_boxes=DIR or set "
            "encoder.box_embed=false"
        )


def _build_module(
    cfg: DictConfig, datamodule: Any, source: CaptioningModule | None
) -> CaptioningModule:
    """The LightningModule for ``cfg.model`` on this data, wired to its references and reward."""
    prepare_regions(cfg, datamodule)
    module = CaptioningModule(
        model=_container(cfg.model),
        optimizer=_container(cfg.optimizer),
        scheduler=_container(cfg.get("scheduler")),
        loss=_container(cfg.loss),
        decoding=_container(cfg.decoding),
        vocab=datamodule.vocab.tokens,
        data_fingerprint=datamodule.fingerprint,
        config=run_config(cfg),
        encoder_lr=cfg.get("encoder_lr"),
        scst=_container(cfg.get("scst")),
    )
    check_encoder_input(module.captioner.encoder, int(datamodule.image_size))
    if source is not None:
        initialise_from(module, source, cfg.init_from, datamodule.fingerprint)
    if cfg.get("channels_last"):
        module = module.to(memory_format=torch.channels_last)
    if cfg.get("compile"):
        module.captioner.compile()  # in place: state_dict keys stay those of the plain model
    attach_references(module, datamodule, ("val", "test"), _container(cfg.get("metrics")))
    if module.uses_scst():
        module.reward = scst_reward(datamodule, module.scst_settings)
    return module


def _build_trainer(
    cfg: DictConfig, datamodule: Any, output_dir: Path, resuming: bool
) -> tuple[L.Trainer, list[L.Callback], list[Any]]:
    """The Trainer with the configured callbacks and loggers, and ours (RNG state, divergence)."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks.append(RNGState())
    if not any(isinstance(c, StopOnDivergence) for c in callbacks):
        callbacks.append(StopOnDivergence(**(_container(cfg.get("divergence")) or {})))
    callbacks += data_callbacks(datamodule)  # last: feature extraction after the others' setup
    run_id = wandb_run_id(output_dir, resuming=resuming)  # one W&B run throughout
    loggers = [
        instantiate(c, **({"id": run_id} if run_id and _is_wandb(c) else {}))
        for c in (cfg.get("logger") or {}).values()
        if c
    ]
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    if trainer.is_global_zero:
        for logger in loggers:
            remember_wandb_run(logger, output_dir)
    return trainer, callbacks, loggers


def _test_best(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: CaptioningModule,
    datamodule: Any,
    callbacks: list[L.Callback],
    output_dir: Path,
) -> dict[str, float]:
    """Score the test split with the best checkpoint (or the current weights without one)."""
    checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if not best:
        log.warning("No best checkpoint (fast_dev_run or no validation): testing current weights")
    trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
    test_scores = module.results["test"]
    write_json(output_dir / TEST_METRICS_FILE, test_scores)
    if trainer.is_global_zero:
        print_results(
            test_scores,
            module.predictions["test"],
            datamodule.image_ids("test"),
            datamodule.references("test"),
            samples=int(cfg.get("samples", 5)),
            title=f"test metrics ({output_dir / TEST_METRICS_FILE})",
        )
    return {f"test/{k}": v for k, v in test_scores.items()}


def train(cfg: DictConfig) -> dict[str, float]:
    """Train, then score the test split with the best checkpoint; returns all final metrics."""
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = _start_run(cfg, output_dir)
    # read once, before any data set-up: a bad file fails here
    source = CaptioningModule.from_checkpoint(cfg.init_from) if cfg.get("init_from") else None

    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = _build_module(cfg, datamodule, source)
    trainer, callbacks, loggers = _build_trainer(cfg, datamodule, output_dir, ckpt_path is not None)

    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # the cost side of a sweep's table: this process's fit time (a resumed run counts its own
    # part) and the model size
    metrics["fit_time_s"] = time.perf_counter() - started
    metrics["params"] = float(sum(p.numel() for p in module.captioner.parameters()))
    if cfg.get("test"):
        metrics.update(_test_best(cfg, trainer, module, datamodule, callbacks, output_dir))
    if trainer.is_global_zero:  # every final metric, for `python -m captioning.report`
        write_json(output_dir / METRICS_FILE, metrics, sort_keys=True)
    for logger in loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            logger.experiment.finish()  # flush now: the next job of a sweep starts a new run
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
