"""Checks on a composed model: it learns one fixed batch, and every check at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from captioning.models.captioner import Captioner
from captioning.testing._common import device_of, evaluating, fail_unless, seeded_generator
from captioning.testing.attention import check_attention
from captioning.testing.decoders import check_decoder
from captioning.testing.encoders import check_encoder
from captioning.testing.search import check_beam_search


def check_learns(
    captioner: nn.Module,
    images: torch.Tensor,
    tokens: torch.Tensor,
    *,
    steps: int = 30,
    lr: float = 3e-3,
    factor: float = 0.5,
    train_encoder: bool = True,
    pad_id: int = 0,
) -> list[float]:
    """``steps`` AdamW steps of teacher-forced cross-entropy on one fixed batch bring the
    loss to at most ``factor`` x the first one; returns the losses.

    Args:
        captioner: ``encode(images) -> regions`` and ``forward(images | regions, tokens)``
            (a :class:`~captioning.models.Captioner`); it is trained in place.
        images: (B, 3, H, W) images.
        tokens: (B, T) captions: ``tokens[:, :-1]`` in, ``tokens[:, 1:]`` predicted
            (``pad_id`` targets ignored).
        train_encoder: False computes the regions once and trains the decoder only (a frozen
            encoder, as with ``data.cache_features``).
    """
    device = device_of(captioner)
    images, tokens = images.to(device), tokens.to(device)
    was_training = captioner.training
    if train_encoder:
        inputs, module = images, captioner
    else:
        with torch.no_grad(), evaluating(captioner.encoder):
            inputs = captioner.encode(images)
        module = captioner.decoder
    parameters = [p for p in module.parameters() if p.requires_grad]
    fail_unless(bool(parameters), f"{type(module).__name__} has no trainable parameters")
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    losses: list[float] = []
    module.train()
    try:
        for _ in range(steps):
            logits, _ = captioner(inputs, tokens[:, :-1])
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=pad_id
            )
            fail_unless(
                bool(torch.isfinite(loss.detach())),
                f"loss {loss.item()} after {len(losses)} AdamW steps",
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        captioner.train(was_training)
    fail_unless(
        losses[-1] <= factor * losses[0],
        f"{type(captioner).__name__} did not learn one fixed batch: the loss went from "
        f"{losses[0]:.4f} to {losses[-1]:.4f} in {steps} AdamW steps (lr {lr:g}), expected "
        f"<= {factor:g} x {losses[0]:.4f} = {factor * losses[0]:.4f}; losses "
        f"{[round(x, 3) for x in losses]}",
    )
    return losses


def check_captioner(
    captioner: nn.Module,
    images: torch.Tensor,
    tokens: torch.Tensor,
    *,
    beam_sizes: Sequence[int] = (1, 3),
    max_len: int = 8,
    learn_steps: int = 30,
    lr: float = 3e-3,
    factor: float = 0.5,
    train_encoder: bool = True,
    rtol: float = 1e-5,
) -> None:
    """Every check on a composed model (``captioner.encoder``, ``captioner.decoder``):
    :func:`check_encoder` on ``images``, :func:`check_decoder` on their regions with
    ``tokens``, :func:`check_beam_search` (skipped when ``beam_sizes`` is empty) and
    :func:`check_learns` (skipped when ``learn_steps`` is 0; trains the captioner in place)."""
    images = images.to(device_of(captioner))
    regions = check_encoder(captioner.encoder, images=images)
    check_decoder(captioner.decoder, regions, tokens, rtol=rtol)
    if beam_sizes:
        check_beam_search(
            captioner.decoder, regions, beam_sizes=beam_sizes, max_len=max_len, rtol=rtol
        )
    if learn_steps:
        check_learns(
            captioner, images, tokens, steps=learn_steps, lr=lr, factor=factor,
            train_encoder=train_encoder,
        )  # fmt: skip


def check_components(
    encoder: nn.Module,
    attention: Callable[..., nn.Module] | None,
    decoder: Callable[..., nn.Module],
    *,
    vocab_size: int = 19,
    image_size: int | tuple[int, int] = 32,
    batch: int = 3,
    steps: int = 6,
    seed: int = 0,
    **options: Any,
) -> Captioner:
    """Compose ``encoder`` + ``decoder`` (owning ``attention``) as the config tree does and run
    every check; returns the trained :class:`~captioning.models.Captioner`.

    Args:
        encoder: the encoder module.
        attention: the attention factory (``attention(query_dim=, region_dim=)``, what
            ``conf/attention/*.yaml`` gives), checked with :func:`check_attention`
            (``region_dim`` = the encoder's ``out_dim``) and handed to the decoder as
            ``attention=``; None for a decoder that brings its own.
        decoder: the decoder factory (``decoder(vocab_size=, encoder_dim=, pad_id=, attention=)``).
        vocab_size / image_size / batch / steps: V, H x W, B and T+1 of the random batch.
        options: for :func:`check_captioner` (``beam_sizes``, ``learn_steps``, ``factor``, ...).
    """
    if attention is not None:
        check_attention(attention, region_dim=encoder.out_dim, seed=seed)
        decoder = partial(decoder, attention=attention)
    captioner = Captioner(encoder, decoder, vocab_size=vocab_size)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    generator = seeded_generator(seed)
    images = torch.rand(batch, 3, height, width, generator=generator)
    tokens = torch.randint(1, vocab_size, (batch, steps), generator=generator)
    check_captioner(captioner, images, tokens, **options)
    return captioner
