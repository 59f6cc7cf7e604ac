"""Lightning callbacks: training throughput for every logger, and W&B sample tables.

``SampleLogger`` logs, after each validation, a ``wandb.Table`` of a few validation images
(image, generated caption, references, per-image CIDEr-D) and their attention figures as
``wandb.Image`` s, when a ``WandbLogger`` is attached (on global rank 0 only; other loggers
are left alone).
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from captioning.data.images import load_image
from captioning.metrics.scores import per_image_cider
from captioning.viz import attention_figure


class Throughput(L.Callback):
    """Logs ``train/images_per_s`` for each training epoch (no host sync per step)."""

    def __init__(self) -> None:
        self.images, self.start = 0, None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.images, self.start = 0, time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.start is None:  # resumed mid-epoch: the epoch-start hook did not run
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.images += int(batch["indices"].shape[0])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self.start if self.start is not None else 0.0
        if seconds > 0 and self.images:
            pl_module.log("train/images_per_s", self.images / seconds, on_epoch=True)


class SampleLogger(L.Callback):
    """A W&B table of validation samples with per-image CIDEr-D, and attention figures.

    Args:
        samples: validation images shown (the first ones of the split, the same each time).
        figures: also log an attention figure per sample.
    """

    def __init__(self, samples: int = 8, figures: bool = True) -> None:
        self.samples = samples
        self.figures = figures

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        predictions = getattr(pl_module, "predictions", {}).get("val")
        datamodule = getattr(trainer, "datamodule", None)
        if not (loggers and predictions and trainer.is_global_zero and self.samples > 0):
            return
        if trainer.sanity_checking or datamodule is None:
            return
        import wandb

        references = datamodule.references("val")
        cider = per_image_cider(references, predictions)
        chosen = sorted(predictions)[: self.samples]
        records = datamodule.records["val"]
        images = torch.stack([load_image(records[i].path, datamodule.image_size) for i in chosen])
        figures = self._figures(pl_module, images) if self.figures else {}
        rows = []
        for row, index in enumerate(chosen):
            picture = wandb.Image(images[row].permute(1, 2, 0).numpy())
            rows.append(
                [picture, records[index].image_id, predictions[index],
                 " | ".join(references[index]), cider[index]]
            )  # fmt: skip
        columns = ["image", "image_id", "generated", "references", "CIDEr-D"]
        for logger in loggers:
            logger.log_table("val/samples", columns=columns, data=rows, step=trainer.global_step)
            if figures:
                logger.log_image(
                    "val/attention",
                    [figures[i] for i in range(len(chosen))],
                    step=trainer.global_step,
                    caption=[predictions[i] for i in chosen],
                )

    @torch.no_grad()
    def _figures(self, pl_module: Any, images: torch.Tensor) -> dict[int, Any]:
        was_training = pl_module.training
        pl_module.eval()
        encoder = pl_module.captioner.encoder
        tokens, weights = pl_module.decode(images.to(pl_module.device))
        pl_module.train(was_training)
        grid = encoder.grid(images.shape[-2], images.shape[-1])
        figures = {}
        for row in range(images.shape[0]):
            words = pl_module.vocab.decode_ids(tokens[row].tolist())
            figures[row] = attention_figure(
                images[row].permute(1, 2, 0).numpy(), words, weights[row].float().cpu(), grid
            )
        return figures
