"""Captioner = Encoder + Decoder (the decoder owns its attention)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Captioner(nn.Module):
    """Compose an encoder and a decoder built for its region width.

    Args:
        encoder: an encoder module (``out_dim``, ``grid``).
        decoder: ``decoder(vocab_size=, encoder_dim=, pad_id=) -> decoder`` (a Hydra partial).
        vocab_size / pad_id: from the vocabulary.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: Callable[..., nn.Module],
        vocab_size: int,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder(vocab_size=vocab_size, encoder_dim=encoder.out_dim, pad_id=pad_id)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Regions of images (B, 3, H, W); cached regions (B, N, De) pass through as floats."""
        if images.dim() == 3:  # data.cache_features: the frozen encoder already ran
            return images.float()
        return self.encoder(images)  # (B, N, De)

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(self.encode(images), tokens)  # (B, T, V), (B, T, N)
