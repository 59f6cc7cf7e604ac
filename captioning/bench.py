"""Benchmarks: ``python -m captioning.bench`` (``make bench``) prints a table and writes bench.json.

Every benchmark times our path and its obvious alternative in the same process, on the same
model and data, and reports ``ratio = alternative time / our time`` (bigger is better).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from captioning import CONFIG_DIR
from captioning.bench_data import bench_feature_cache, bench_loader
from captioning.bench_scst import bench_scst_reward
from captioning.bench_throughput import bench_throughput
from captioning.decoding import beam_search
from captioning.models import Captioner

log = logging.getLogger(__name__)

VOCAB, LENGTH, IMAGE = 41, 18, 64  # the default Shapes model's sizes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` after one warm-up call, device-synchronised."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# The default `make train` model (small CNN, additive attention, LSTM 256), as config: the
# plain loop instantiates it directly, our LightningModule from the same dict.
MODEL_CFG = {
    "_target_": "captioning.models.Captioner",
    "encoder": {"_target_": "captioning.models.SmallCNN", "kernel_size": 4},
    "decoder": {
        "_target_": "captioning.models.LSTMDecoder",
        "_partial_": True,
        "attention": {"_target_": "captioning.models.AdditiveAttention", "_partial_": True},
    },
}


def shapes_model() -> Captioner:
    return instantiate(MODEL_CFG, vocab_size=VOCAB, pad_id=0)


def _batches(count: int, batch_size: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        tokens = torch.randint(4, VOCAB, (batch_size, LENGTH), generator=generator)
        tokens[:, 0], tokens[:, -1] = 1, 2
        batches.append(
            {
                "images": torch.randint(
                    0, 256, (batch_size, 3, IMAGE, IMAGE), dtype=torch.uint8, generator=generator
                ),
                "tokens": tokens,
                "lengths": torch.full((batch_size,), LENGTH),
                "indices": torch.arange(batch_size),
            }
        )
    return batches


# ----------------------------------------------------------------------------- benchmarks


def bench_loop_overhead(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Our LightningModule's training steps against a hand-written loop on the same model."""
    from captioning.module import CaptioningModule

    steps, repeats = int(cfg.loop_steps), int(cfg.repeats)
    batches = _batches(steps, int(cfg.batch_size))
    vocab = ["<pad>", "<bos>", "<eos>", "<unk>", *[f"w{i}" for i in range(VOCAB - 4)]]
    optimizer_cfg = {
        "_target_": "torch.optim.AdamW",
        "_partial_": True,
        "lr": 2e-3,
        "weight_decay": 1e-2,
    }

    def plain() -> None:
        torch.manual_seed(0)
        model = shapes_model().to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
        for batch in batches:
            images = batch["images"].to(device, non_blocking=True).float().div_(255)
            tokens = batch["tokens"].to(device, non_blocking=True)
            logits, _ = model(images, tokens[:, :-1])
            loss = F.cross_entropy(
                logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1), ignore_index=0
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()

    def ours() -> None:
        torch.manual_seed(0)
        module = CaptioningModule(
            model=MODEL_CFG,
            optimizer=optimizer_cfg,
            scheduler=None,
            loss={},
            decoding={},
            vocab=vocab,
        )
        trainer = L.Trainer(
            accelerator=device.type, devices=1, max_steps=steps, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            gradient_clip_val=5.0, num_sanity_val_steps=0, limit_val_batches=0,
        )  # fmt: skip
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))

    plain_s = median_time(plain, device, repeats)
    ours_s = median_time(ours, device, repeats)
    return {
        "ratio": plain_s / ours_s,
        "plain_step_s": plain_s / steps,
        "ours_step_s": ours_s / steps,
        "ours_images_per_s": steps * int(cfg.batch_size) / ours_s,
        "steps": steps,
        "batch_size": int(cfg.batch_size),
        "note": "ours includes building the Trainer each repetition",
    }


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

    ours_s = median_time(batched, device, int(cfg.repeats))
    loop_s = median_time(per_image, device, max(1, int(cfg.repeats) // 2))
    decoder_s = median_time(decoder_only, device, int(cfg.repeats))
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
    """Transformer ``step`` with its key/value cache against re-running the whole prefix."""
    from captioning.models import MultiHeadAttention, TransformerDecoder

    torch.manual_seed(0)
    steps, batch = int(cfg.kv_steps), int(cfg.beam_batch)
    decoder = TransformerDecoder(
        vocab_size=VOCAB, encoder_dim=128, attention=partial(MultiHeadAttention, attention_dim=128),
        d_model=256, heads=4, layers=2, ffn_dim=1024, max_len=steps + 1,
    ).to(device).eval()  # fmt: skip
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

    ours_s = median_time(cached, device, int(cfg.repeats))
    plain_s = median_time(uncached, device, int(cfg.repeats))
    return {
        "ratio": plain_s / ours_s,
        "cached_s": ours_s,
        "uncached_s": plain_s,
        "steps": steps,
        "batch": batch,
    }


def bench_metrics(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Our CIDEr-D against pycocoevalcap's on a random corpus (needs the dev extra)."""
    from captioning.metrics.bench import bench_metrics as run

    return run(n_images=int(cfg.metrics_images), n_refs=5)


BENCHMARKS: dict[str, Callable[[DictConfig, torch.device], dict[str, Any]]] = {
    "loop_overhead": bench_loop_overhead,
    "beam_batched": bench_beam_batched,
    "transformer_kv_cache": bench_transformer_kv_cache,
    "metrics": bench_metrics,
    "loader": bench_loader,
    "feature_cache": bench_feature_cache,
    "throughput": bench_throughput,
    "scst_reward": bench_scst_reward,
}


def run_benchmarks(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("bench.device=cuda but no CUDA device is visible; use bench.device=cpu")
    names = list(cfg.only) if cfg.get("only") else list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"bench.only: unknown {unknown}; choose from {list(BENCHMARKS)}")
    results = {}
    for name in names:
        log.info("benchmark %s on %s", name, device)
        results[name] = BENCHMARKS[name](cfg, device)
    results_meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "threads": torch.get_num_threads()}  # fmt: skip
    for result in results.values():
        result.update(results_meta)
    return results


def print_table(results: dict[str, dict[str, Any]]) -> None:
    table = Table(title="benchmarks (ratio = alternative time / ours; bigger is better)")
    for column in ("benchmark", "ratio", "details"):
        table.add_column(column)
    for name, result in results.items():
        details = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in result.items()
            if k not in ("ratio", "note", "device", "threads")
        )
        table.add_row(name, f"{result['ratio']:.2f}", details)
    Console().print(table)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    results = run_benchmarks(cfg.bench)
    Path(cfg.bench.output).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


if __name__ == "__main__":
    main()
