"""The LightningModule: teacher-forced training, decoded validation, scores on every split."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torchmetrics import MaxMetric, MetricCollection

from captioning.checkpoint import config_value, read_checkpoint
from captioning.decoding import (
    BeamOutput,
    DecodingConfig,
    beam_search,
    greedy_decode,
    sample_decode,
)
from captioning.metrics import CaptionMetric
from captioning.metrics.grounding import GroundingMetric
from captioning.metrics.objects import object_f1
from captioning.models.encoders import weights_from_checkpoint
from captioning.models.regions import RegionEncoder, Regions
from captioning.objectives import CrossEntropy, SelfCritical
from captioning.objectives.scst import Reward
from captioning.text import SPECIALS, Vocabulary

log = logging.getLogger(__name__)

SPLITS = ("val", "test")  # the validation loop scores val, the test loop test


class CaptioningModule(L.LightningModule):
    """Train and evaluate a Captioner built from config.

    Everything is stored as plain config and a token list, so a checkpoint rebuilds the
    model on its own (``weights_only=True``) with no pickled code.

    The module never reads a DataModule. Before ``fit``, ``validate`` or ``test`` the entry
    point (``captioning.wiring``) gives it what it cannot build itself: each scored split's
    references (``attach_references``) and, for SCST, the reward (``module.reward``).

    Args:
        model: Hydra config of the Captioner (``encoder``, ``decoder`` with its ``attention``).
        optimizer: Hydra partial config of the optimizer (given the parameters).
        scheduler: Hydra partial config of the LR schedule (given optimizer and total steps).
        loss: ``label_smoothing`` and ``attention_reg`` (doubly stochastic lambda).
        decoding: the ``decoding`` config group's settings for validation and test (plain
            data: ``captioning.decoding.DecodingConfig`` fills the keys it lacks).
        vocab: the vocabulary's tokens.
        data_fingerprint: hash of the records the vocabulary was built on.
        config: the full resolved run config, kept for provenance.
        encoder_lr: a learning rate of its own for the encoder (fine-tuning a pretrained
            CNN/ViT slower than the decoder learns); None: the optimizer's.
        scst: self-critical training settings (``captioning.scst``), used when
            ``model.objective=scst`` or from epoch ``scst.after_epoch`` on.
    """

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None,
        loss: dict[str, float],
        decoding: dict[str, Any],
        vocab: list[str],
        data_fingerprint: str = "",
        config: dict[str, Any] | None = None,
        encoder_lr: float | None = None,
        scst: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vocab = Vocabulary(vocab)
        self.objective = model.get("objective", "xe")
        if self.objective not in ("xe", "scst"):
            raise ValueError(f"model.objective must be xe or scst, got {self.objective!r}")
        self.scst_settings = dict(scst or {})
        captioner = {k: v for k, v in model.items() if k != "objective"}
        self.captioner = instantiate(
            captioner, vocab_size=len(self.vocab), pad_id=self.vocab.pad_id
        )
        self.reward: Reward | None = None  # set by the entry point when SCST is used
        self.val_cider_best = MaxMetric()
        self.decoding = dict(decoding)
        self.cross_entropy = CrossEntropy.of(loss, self.vocab.pad_id)
        self.self_critical = SelfCritical(
            self.scst_settings, self.vocab, self.decoding_config.max_len
        )
        # per split: the caption metric (``caption``) and, where objects exist, ``grounding``
        self.metrics: dict[str, MetricCollection] = {}
        self.objects: dict[str, dict[int, list] | None] = {}
        self.results: dict[str, dict[str, float]] = {}
        self.predictions: dict[str, dict[int, str]] = {}
        # image index -> its n_best captions, best first (one each with n_best=1)
        self.predictions_nbest: dict[str, dict[int, list[str]]] = {}
        self.source = ""  # the checkpoint this module was read from, for messages

    @property
    def decoding(self) -> dict[str, Any]:
        """How captions are decoded (``conf`` group ``decoding``), as set; checked when set.
        ``decoding_config`` is the typed view, with the defaults of keys it lacks."""
        return self._decoding

    @decoding.setter
    def decoding(self, settings: Mapping[str, Any] | DecodingConfig) -> None:
        self.decoding_config = DecodingConfig.of(settings)
        self._decoding = dict(settings) if isinstance(settings, Mapping) else settings.as_dict()
        self.reseed_sampling()

    def reseed_sampling(self) -> None:
        """Sampling starts over from ``decoding.seed`` (at the start of every evaluation
        epoch): the same model and data give the same samples, whatever ran before."""
        self._sampling_generator: torch.Generator | None = None

    def _generator(self, device: torch.device) -> torch.Generator:
        generator = self._sampling_generator
        if generator is None or generator.device != device:
            generator = torch.Generator(device=device).manual_seed(self.decoding_config.seed)
            self._sampling_generator = generator
        return generator

    # ------------------------------------------------------------------ references

    def attach_references(
        self,
        split: str,
        references: Mapping[int, Sequence[str]],
        objects: Mapping[int, Sequence[Mapping[str, Any]]] | None = None,
        image_size: int | None = None,
        annotation_size: int | None = None,
        training_captions: Collection[str] | None = None,
        meteor: str = "python",
        spice: bool = False,
    ) -> None:
        """What the ``val`` or ``test`` loop scores against, and how.

        Args:
            split: ``val`` (the validation loop) or ``test`` (the test loop).
            references: image index -> its reference captions (space-joined tokens).
            objects: image index -> its annotated objects (Shapes' ``boxes.json``), for object
                F1 and grounding; None when the data has none.
            image_size: side of the images the model sees (with ``objects``).
            annotation_size: side of the images the objects' boxes refer to (with ``objects``).
            training_captions: the training captions (space-joined tokens), for ``novel``.
            meteor: ``metrics.meteor_backend``: ``python`` | ``java`` | ``none``.
            spice: ``metrics.spice``: SPICE too (Java; checked by the entry points first).
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        metrics: dict[str, Any] = {
            "caption": CaptionMetric(
                references=references,
                decode=self.vocab.decode,
                pad_id=self.vocab.pad_id,
                eos_id=self.vocab.eos_id,
                meteor=False if meteor == "none" else meteor,
                spice=spice,
                vocabulary_size=len(self.vocab) - len(SPECIALS),
                training_captions=training_captions,
            )
        }
        if objects is not None:
            if image_size is None or annotation_size is None:
                raise ValueError("objects need the image_size and the annotation_size")
            # region inputs have boxes, not a grid: the box-level score (boxes come per batch)
            encoder = self.captioner.encoder
            grid = (
                None if isinstance(encoder, RegionEncoder) else encoder.grid(image_size, image_size)
            )
            metrics["grounding"] = GroundingMetric(
                objects, self.vocab.decode_ids, grid, annotation_size
            )
        self.metrics[split] = MetricCollection(metrics, compute_groups=False).to(self.device)
        self.objects[split] = objects

    # ------------------------------------------------------------------ training

    @staticmethod
    def to_float(images: torch.Tensor | Regions) -> torch.Tensor | Regions:
        """uint8 images (moved to the device as bytes: 4x less to copy) to floats in [0, 1];
        region features pass through."""
        if isinstance(images, Regions):
            return images
        return images.float().div_(255) if images.dtype == torch.uint8 else images

    @classmethod
    def inputs(cls, batch: dict[str, torch.Tensor]) -> torch.Tensor | Regions:
        """What the captioner reads from a batch: float images, cached regions, or the padded
        region features of ``data.region_features`` (:class:`Regions`, with their mask)."""
        if "regions" in batch:
            return Regions.of_batch(batch)
        return cls.to_float(batch["images"])

    def model_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The cross-entropy objective on a batch (``captioning.objectives.CrossEntropy``)."""
        return self.cross_entropy(self.captioner, self.inputs(batch), batch["tokens"])

    def uses_scst(self) -> bool:
        return self.objective == "scst" or self.scst_settings.get("after_epoch") is not None

    def scst_active(self) -> bool:
        after = self.scst_settings.get("after_epoch")
        return self.objective == "scst" or (after is not None and self.current_epoch >= after)

    def scst_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The SCST objective on a batch (``captioning.objectives.SelfCritical``)."""
        if self.reward is None:
            raise RuntimeError(
                "SCST needs a reward: set module.reward (captioning.wiring.scst_reward) first"
            )
        return self.self_critical(self.captioner, self.inputs(batch), batch["indices"], self.reward)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.scst_active():
            out = self.scst_step(batch)
            for key in ("reward", "baseline", "advantage", "entropy"):
                self.log(f"train/scst_{key}", out[key], on_step=True, prog_bar=key == "reward")
            return out["loss"]
        out = self.model_step(batch)
        # logged as a tensor: Lightning reads it back only every log_every_n_steps
        self.log("train/loss", out["cross_entropy"], on_step=True, prog_bar=True)
        if "attention_reg" in out:
            self.log("train/attention_reg", out["attention_reg"], on_step=True)
        return out["loss"]

    # ------------------------------------------------------------------ evaluation

    def _ids(self) -> dict[str, int]:
        return {
            "bos_id": self.vocab.bos_id,
            "eos_id": self.vocab.eos_id,
            "pad_id": self.vocab.pad_id,
        }

    def search(
        self, regions: torch.Tensor, n_best: int | None = None, mask: torch.Tensor | None = None
    ) -> BeamOutput:
        """The ``n_best`` captions (default: ``decoding.n_best``) of encoded images as
        ``decoding_config`` says: beam search, diverse beam search (``groups`` > 1) or
        sampling (``sample``, from the module's generator seeded with ``decoding.seed``);
        ``mask`` (B, N): the real regions of padded region sets."""
        options = self.decoding_config
        n_best = options.n_best if n_best is None else n_best
        common = {
            "max_len": options.max_len,
            "length_penalty_mode": options.length_penalty,
            "alpha": float(options.alpha),
            "block_trigrams": options.block_trigrams,
            "suppress_ids": (self.vocab.unk_id,) if options.suppress_unk else (),
            "mask": mask,
            **self._ids(),
        }
        if options.sample:
            return sample_decode(
                self.captioner.decoder, regions, n=n_best,
                temperature=float(options.temperature), top_k=options.top_k,
                top_p=float(options.top_p), generator=self._generator(regions.device), **common,
            )  # fmt: skip
        return beam_search(
            self.captioner.decoder, regions, beam_size=options.beam_size, n_best=n_best,
            groups=options.groups, diversity=float(options.diversity), **common,
        )  # fmt: skip

    def decode_nbest(self, images: torch.Tensor | Regions) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``decoding.n_best`` captions of a batch, best first: tokens (B, n, L) and
        attention (B, n, L, N) (zero on padded regions and after ``<eos>``)."""
        regions, mask = self.captioner.encode_masked(self.to_float(images))
        options = self.decoding_config
        if options.plain_greedy:  # the fast path; equal to beam size 1 (tested)
            tokens, weights = greedy_decode(
                self.captioner.decoder, regions, max_len=options.max_len, mask=mask, **self._ids()
            )
            return tokens.unsqueeze(1), weights.unsqueeze(1)
        out = self.search(regions, mask=mask)
        return out.tokens, out.weights

    def decode(self, images: torch.Tensor | Regions) -> tuple[torch.Tensor, torch.Tensor]:
        """The best caption of each image as ``decoding_config`` says: tokens (B, L), attention
        (B, L, N) (zero on padded regions)."""
        tokens, weights = self.decode_nbest(images)
        return tokens[:, 0], weights[:, 0]

    def _eval_step(self, split: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Decode a batch and add it to the split's metrics.

        Returns what callbacks read in ``on_{validation,test}_batch_end``: ``indices`` (B,)
        image indices, ``tokens`` (B, L) the first caption's ids and ``weights`` (B, L, N) its
        attention; with ``decoding.n_best`` > 1 also ``nbest_tokens`` (B, n, L), best first.
        """
        if split not in self.metrics:
            raise RuntimeError(
                f"no references to score the {split} split against: call "
                f"module.attach_references({split!r}, ...) (captioning.wiring) first"
            )
        nbest_tokens, nbest_weights = self.decode_nbest(self.inputs(batch))
        tokens, weights = nbest_tokens[:, 0], nbest_weights[:, 0]
        several = nbest_tokens.shape[1] > 1
        self.metrics[split].update(
            image_indices=batch["indices"], token_ids=tokens, weights=weights,
            boxes=batch.get("boxes"), nbest_ids=nbest_tokens if several else None,
        )  # fmt: skip
        out = {"indices": batch["indices"], "tokens": tokens, "weights": weights}
        if several:
            out["nbest_tokens"] = nbest_tokens
        return out

    def _eval_epoch_end(self, split: str) -> dict[str, float]:
        metrics = self.metrics[split]
        computed = {key: float(value) for key, value in metrics.compute().items()}
        predictions = dict(metrics["caption"].last_predictions)
        nbest = dict(metrics["caption"].last_nbest)
        grounding = {k: computed.pop(k) for k in ("grounding", "grounding_noun") if k in computed}
        scores = computed  # the caption scores, then object F1 and grounding, as logged
        objects = self.objects.get(split)
        if objects is not None:
            scores.update(object_f1(predictions, {i: objects[i] for i in predictions}))
        scores.update(grounding)
        metrics.reset()
        self.results[split] = scores
        self.predictions[split] = predictions
        self.predictions_nbest[split] = nbest
        # every rank holds the gathered scores already: no further reduction needed
        self.log_dict({f"{split}/{k}": v for k, v in scores.items()}, sync_dist=False)
        return scores

    def on_validation_epoch_start(self) -> None:
        self.reseed_sampling()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict:
        return self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        scores = self._eval_epoch_end("val")
        self.val_cider_best(torch.tensor(scores["CIDEr-D"]))
        self.log("val/CIDEr-D_best", self.val_cider_best.compute(), prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self.reseed_sampling()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict:
        return self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        encoder_lr = self.hparams.get("encoder_lr")
        params: Any = [p for p in self.parameters() if p.requires_grad]
        if encoder_lr is not None:
            encoder_params = {id(p) for p in self.captioner.encoder.parameters()}
            params = [
                {"params": [p for p in params if id(p) in encoder_params], "lr": float(encoder_lr)},
                {"params": [p for p in params if id(p) not in encoder_params]},
            ]
        optimizer = instantiate(self.hparams.optimizer)(params=params)
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer, total_steps=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # torchmetrics keeps metric states out of the state dict: the best val CIDEr-D so far
        # travels as a plain float, so that a resumed run's `val/CIDEr-D_best` goes on from it
        if self.val_cider_best.update_called:
            checkpoint["val_cider_best"] = float(self.val_cider_best.compute())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_cider_best.reset()
        if "val_cider_best" in checkpoint:  # absent from checkpoints written before it was kept
            self.val_cider_best.update(torch.tensor(float(checkpoint["val_cider_best"])))

    @classmethod
    def from_checkpoint(
        cls, path: str, map_location: str | torch.device = "cpu"
    ) -> CaptioningModule:
        """Rebuild a model from a checkpoint alone, loading only tensors and plain data."""
        checkpoint = read_checkpoint(path, map_location)
        with weights_from_checkpoint():  # its state dict replaces any pretrained weights
            module = cls(**checkpoint["hyper_parameters"])
        module.load_state_dict(checkpoint["state_dict"])
        module.source = str(path)
        return module

    def setting(self, dotted: str) -> Any:
        """A value of the run config stored in the checkpoint (``data.image_size``), or an
        error naming the checkpoint and the missing key."""
        return config_value(self.hparams.get("config"), dotted, self.source)
