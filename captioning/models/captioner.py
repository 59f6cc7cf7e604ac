"""Captioner = Encoder [+ Refiner] + Decoder (the decoder owns its attention)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from captioning.models.regions import Regions
from captioning.models.state import decode_masked

Inputs = torch.Tensor | Regions


def _accepts(factory: Callable[..., nn.Module], name: str) -> bool:
    """Whether a Hydra partial (or class) takes keyword ``name`` (and was not given it)."""
    keywords = getattr(factory, "keywords", {}) or {}
    if name in keywords:
        return False
    target = getattr(factory, "func", factory)
    try:
        return name in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


class Captioner(nn.Module):
    """Compose an encoder, an optional refiner and a decoder built for the regions' width.

    Args:
        encoder: an encoder module (``out_dim``; ``grid`` for image encoders).
        decoder: ``decoder(vocab_size=, encoder_dim=, pad_id=) -> decoder`` (a Hydra partial).
        vocab_size / pad_id: from the vocabulary.
        refiner: ``refiner(region_dim=) -> refiner`` (a Hydra partial, ``conf/refiner/``), run
            over the encoder's regions; None or ``refiner=none``: the regions as they are.

    Inputs are images (B, 3, H, W), cached encoder regions (B, N, De) or a padded batch of
    region features (:class:`~captioning.models.regions.Regions`, whose mask every later
    stage honours).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: Callable[..., nn.Module],
        vocab_size: int,
        pad_id: int = 0,
        refiner: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.refiner = refiner(region_dim=encoder.out_dim) if refiner is not None else None
        width = self.refiner.out_dim if self.refiner is not None else encoder.out_dim
        levels = int(getattr(self.refiner, "levels", 1))
        options = {"levels": levels} if levels > 1 and _accepts(decoder, "levels") else {}
        self.decoder = decoder(vocab_size=vocab_size, encoder_dim=width, pad_id=pad_id, **options)
        reads = int(getattr(self.decoder, "levels", 1))
        if reads != levels:
            raise ValueError(
                f"the refiner gives {levels} stacked layer outputs and the decoder reads "
                f"{reads}: a meshed decoder reads every layer of refiner=memory; other decoders "
                "read one (refiner.levels=1)"
            )

    def encode_masked(self, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Regions (B, N, De) and their mask (B, N) (None: every region is real)."""
        mask = None
        if isinstance(inputs, Regions):
            regions, mask = self.encoder(inputs), inputs.mask
        elif inputs.dim() == 3:  # data.cache_features: the frozen encoder already ran
            regions = inputs.float()
        else:
            regions = self.encoder(inputs)  # (B, N, De)
        if self.refiner is not None:
            regions = self.refiner(regions, mask)
        return regions, mask

    def encode(self, inputs: Inputs) -> torch.Tensor:
        """Regions of images (B, 3, H, W); cached regions (B, N, De) pass through as floats."""
        return self.encode_masked(inputs)[0]

    def forward(self, inputs: Inputs, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        regions, mask = self.encode_masked(inputs)
        return decode_masked(self.decoder, regions, tokens, mask)  # (B, T, V), (B, T, N)
