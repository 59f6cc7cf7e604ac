"""Lightning callbacks: divergence guard, training throughput, and W&B sample tables.

``StopOnDivergence`` ends training at the first non-finite loss, naming the step, the learning
rate and the last finite loss, and refuses to save a checkpoint of non-finite weights.

``SampleLogger`` logs, after each validation, a ``wandb.Table`` of a few validation images
(image, generated caption, references, per-image CIDEr-D) and their attention figures as
``wandb.Image`` s, when a ``WandbLogger`` is attached (on global rank 0 only; other loggers
are left alone).
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from captioning.data.images import load_image
from captioning.metrics.scores import per_image_cider
from captioning.viz import attention_figure


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or weights."""


class StopOnDivergence(L.Callback):
    """Stop at the first non-finite training loss; never checkpoint non-finite weights.

    The loss is checked on the device each step (no host sync); the verdict is read back every
    ``check_every_n_steps`` steps and always before validation and before any checkpoint is
    written, so a diverged model is neither scored nor saved.

    Args:
        check_every_n_steps: steps between read-backs (each one is a host sync on a GPU).
    """

    def __init__(self, check_every_n_steps: int = 10) -> None:
        if int(check_every_n_steps) < 1:
            raise ValueError(f"check_every_n_steps={check_every_n_steps}: expected an integer >= 1")
        self.every = int(check_every_n_steps)
        self._reset()

    def _reset(self) -> None:
        self.first_bad: torch.Tensor | None = None  # step of the first non-finite loss, or -1
        self.bad_loss: torch.Tensor | None = None
        self.last_finite: torch.Tensor | None = None
        self.last_finite_step: torch.Tensor | None = None
        self.rates: dict[int, float] = {}  # learning rate of each step since the last read-back
        self.step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.step = trainer.global_step  # optimizer steps taken before this batch's loss
        if trainer.optimizers:
            self.rates[self.step] = float(trainer.optimizers[0].param_groups[-1]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach().float()
        step = torch.tensor(self.step, device=loss.device)
        if self.first_bad is None:
            self.first_bad = torch.tensor(-1, device=loss.device)
            self.bad_loss = torch.tensor(math.nan, device=loss.device)
            self.last_finite = torch.tensor(math.nan, device=loss.device)
            self.last_finite_step = torch.tensor(-1, device=loss.device)
        finite = torch.isfinite(loss)
        clean = self.first_bad < 0
        self.last_finite = torch.where(finite & clean, loss, self.last_finite)
        self.last_finite_step = torch.where(finite & clean, step, self.last_finite_step)
        self.bad_loss = torch.where(~finite & clean, loss, self.bad_loss)
        self.first_bad = torch.where(~finite & clean, step, self.first_bad)
        if (self.step + 1) % self.every == 0:
            self.check(trainer)

    def _last_finite(self) -> str:
        last = float(self.last_finite) if self.last_finite is not None else math.nan
        if not math.isfinite(last):
            return "no step had a finite loss"
        return f"the last finite loss was {last:.4g} at step {int(self.last_finite_step)}"

    def check(self, trainer: L.Trainer) -> None:
        """Raise ``DivergenceError`` if a loss since the start of training was not finite."""
        if self.first_bad is None:
            return
        bad = int(self.first_bad)
        if bad < 0:
            self.rates = {self.step: self.rates[self.step]} if self.step in self.rates else {}
            return
        rate = self.rates.get(bad)
        raise DivergenceError(
            f"training diverged: the loss became {float(self.bad_loss)} at step {bad} "
            f"(epoch {trainer.current_epoch}"
            + (f", learning rate {rate:.4g}" if rate is not None else "")
            + f"); {self._last_finite()}. No checkpoint of the diverged weights was written. "
            "Lower optimizer.lr, keep trainer.gradient_clip_val on, or check the data"
        )

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.check(trainer)  # raising here stops the write: no file is created
        # parameters and buffers (BatchNorm statistics overflow before the loss does)
        tensors = {n: t for n, t in pl_module.state_dict().items() if t.is_floating_point()}
        finite = [torch.isfinite(t).all() for t in tensors.values()]
        if finite and not bool(torch.stack(finite).all()):
            names = [n for n, t in tensors.items() if not torch.isfinite(t).all()]
            rate = self.rates.get(self.step)
            raise DivergenceError(
                f"training diverged: {len(names)} weight tensors hold non-finite values at "
                f"step {self.step} (first: {names[0]}"
                + (f"; learning rate {rate:.4g}" if rate is not None else "")
                + f"); {self._last_finite()}. No checkpoint of the diverged weights was "
                "written. Lower optimizer.lr or keep trainer.gradient_clip_val on"
            )


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
