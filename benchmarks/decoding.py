"""Decoding benchmarks: batched beam search, and the transformer's key/value cache."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from benchmarks.models import IMAGE, VOCAB, node, shapes_model, train_config
from benchmarks.timing import seconds_per_call
from captioning.decoding import beam_search


def recorded_steps(decoder: torch.nn.Module, run: Callable[[], Any]) -> list[tuple[Any, Any]]:
    """The ``(tokens, state)`` arguments of every ``decoder.step`` call that ``run`` makes.

    Replaying them repeats the decoder's work exactly for a decoder whose ``step`` leaves its
    input state untouched (the LSTM's does).
    """
    calls: list[tuple[Any, Any]] = []
    step = decoder.step

    def recording(tokens: torch.Tensor, state: Any) -> Any:
        calls.append((tokens, state))
        return step(tokens, state)

    decoder.step = recording  # an instance attribute shadows the method while ``run`` runs
    try:
        run()
    finally:
        del decoder.step
    return calls


@torch.no_grad()
def bench_beam_batched(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Batched beam search (B x k hypotheses as one batch) against a per-image loop."""
    torch.manual_seed(0)
    model = shapes_model().to(device).eval()
    images = torch.rand(int(cfg.beam_batch), 3, IMAGE, IMAGE, device=device)
    regions = model.encode(images)
    search = partial(
        beam_search, model.decoder, bos_id=1, eos_id=2, pad_id=0,
        beam_size=int(cfg.beam_size), max_len=int(cfg.beam_max_len),
    )  # fmt: skip

    def batched() -> None:
        search(regions)

    def per_image() -> None:
        for b in range(regions.shape[0]):
            search(regions[b : b + 1])

    calls = recorded_steps(model.decoder, batched)

    def decoder_only() -> None:
        for tokens, state in calls:
            model.decoder.step(tokens, state)

    ours_s = seconds_per_call(batched, int(cfg.repeats))
    loop_s = seconds_per_call(per_image, max(1, int(cfg.repeats) // 2))
    decoder_s = seconds_per_call(decoder_only, int(cfg.repeats))
    return {
        "ratio": loop_s / ours_s,
        "batched_s": ours_s,
        "per_image_s": loop_s,
        # the batched search's own decoder calls replayed without the search around them:
        # no batched search over this decoder can beat `ratio_ceiling`
        "decoder_only_s": decoder_s,
        "search_share": max(0.0, 1.0 - decoder_s / ours_s),
        "ratio_ceiling": loop_s / decoder_s,
        "decoder_steps": len(calls),
        "decoder_rows": sum(int(tokens.shape[0]) for tokens, _ in calls),
        "captions_per_s": regions.shape[0] / ours_s,
        "batch": regions.shape[0],
        "beam_size": int(cfg.beam_size),
        "max_len": int(cfg.beam_max_len),
    }


@torch.no_grad()
def bench_transformer_kv_cache(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Transformer ``step`` with its key/value cache against re-running the whole prefix
    (``decoder=transformer attention=multihead`` as configured, over 128-wide regions)."""
    steps, batch = int(cfg.kv_steps), int(cfg.beam_batch)
    train = train_config(
        "decoder=transformer", "attention=multihead", f"decoder.max_len={steps + 1}"
    )
    torch.manual_seed(0)
    decoder = instantiate(node(train, "decoder"))(vocab_size=VOCAB, encoder_dim=128)
    decoder = decoder.to(device).eval()
    regions = torch.randn(batch, 64, 128, device=device)
    tokens = torch.randint(4, VOCAB, (batch, steps), device=device)

    def cached() -> None:
        state = decoder.init_state(regions)
        for t in range(steps):
            _, _, state = decoder.step(tokens[:, t], state)

    def uncached() -> None:
        for t in range(steps):
            logits, _ = decoder(regions, tokens[:, : t + 1])
            logits[:, -1].log_softmax(-1)

    ours_s = seconds_per_call(cached, int(cfg.repeats))
    plain_s = seconds_per_call(uncached, int(cfg.repeats))
    return {
        "ratio": plain_s / ours_s,
        "cached_s": ours_s,
        "uncached_s": plain_s,
        "steps": steps,
        "batch": batch,
    }
