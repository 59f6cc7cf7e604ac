"""Teacher-forced cross-entropy, with the doubly stochastic attention regulariser."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from captioning.models.regions import Regions


@dataclass(frozen=True)
class CrossEntropy:
    """Cross-entropy of each next word under teacher forcing [+ the attention regulariser].

    Args:
        pad_id: the padding id, left out of the loss and of the regulariser.
        label_smoothing: ``loss.label_smoothing``.
        attention_reg: ``loss.attention_reg``, lambda of the doubly stochastic regulariser
            (Xu et al. 2015, eq. 14); 0: off.
    """

    pad_id: int
    label_smoothing: float = 0.0
    attention_reg: float = 0.0

    @classmethod
    def of(cls, loss: Mapping[str, Any], pad_id: int) -> CrossEntropy:
        """From the ``loss`` config node (a key it lacks: off)."""
        return cls(
            pad_id=pad_id,
            label_smoothing=float(loss.get("label_smoothing", 0.0)),
            attention_reg=float(loss.get("attention_reg", 0.0)),
        )

    def __call__(
        self, captioner: nn.Module, images: torch.Tensor | Regions, tokens: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``loss`` to minimise, with ``cross_entropy`` (and ``attention_reg``) detached."""
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T) of <bos> w1 .. wn <eos> <pad>..
        logits, weights = captioner(images, inputs)  # (B, T, V), (B, T, N)
        cross_entropy = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=self.pad_id,
            label_smoothing=self.label_smoothing,
        )
        out = {"loss": cross_entropy, "cross_entropy": cross_entropy.detach()}
        if self.attention_reg > 0:
            # each region's attention, summed over the caption's real steps, should be close
            # to 1
            mask = (targets != self.pad_id).unsqueeze(-1)  # (B, T, 1)
            coverage = (weights * mask).sum(dim=1)  # (B, N)
            if isinstance(images, Regions):  # padded regions are no regions to cover
                real = images.mask.to(coverage.dtype)
                regulariser = (((1.0 - coverage) ** 2) * real).sum() / real.sum().clamp(min=1)
            else:
                regulariser = ((1.0 - coverage) ** 2).mean()
            out["loss"] = cross_entropy + self.attention_reg * regulariser
            out["attention_reg"] = regulariser.detach()
        return out
