"""Throughput of the published presets at 224 px: training images/s, decoding captions/s,
model FLOPs per image (Lightning's ``measure_flops``) and, on a GPU, model FLOP utilisation.

Each variant is a precision plus optional ``compile`` and ``channels_last`` switches
(``"bf16-mixed+compile+channels_last"``); the ratio is the fastest variant's training
throughput over plain fp32 eager, the obvious alternative.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.fabric.utilities.throughput import get_available_flops, measure_flops
from omegaconf import DictConfig

from benchmarks.models import model_config
from benchmarks.timing import seconds_per_call
from captioning.decoding import greedy_decode

PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
SWITCHES = ("compile", "channels_last")
# Dense bf16 peak FLOP/s by device name fragment (vendor datasheets, without sparsity).


def preset_model(entry: str) -> dict[str, Any]:
    """The Captioner config of a ``conf/experiment/`` preset, without pretrained downloads.

    An entry may carry overrides after the preset's name, separated by spaces
    (``"show_attend_tell encoder=timm encoder.name=resnet101"``: the same model on another
    encoder).
    """
    experiment, *overrides = entry.split()
    return model_config(f"experiment={experiment}", *overrides, "encoder.pretrained=false")


def variants(setting: Any, device: torch.device) -> list[str]:
    """``auto``: the whole matrix on a GPU; on a CPU only what finishes in a few minutes
    (compiling ResNet-101 for a CPU step alone takes ~3 minutes on 2 cores)."""
    every = [
        precision + "".join(switches)
        for precision in ("32-true", "bf16-mixed")
        for switches in ((), ("+channels_last",), ("+compile",), ("+compile", "+channels_last"))
    ]
    if setting == "all" or (setting == "auto" and device.type == "cuda"):
        return every
    if setting == "auto":
        return ["32-true", "bf16-mixed", "32-true+channels_last"]
    return list(setting)


def parse_variant(variant: str) -> tuple[str, set[str]]:
    precision, *switches = variant.split("+")
    if precision not in PRECISIONS or not set(switches) <= set(SWITCHES):
        raise ValueError(
            f"bench.throughput_variants: {variant!r} is not <precision>[+compile][+channels_last] "
            f"with a precision in {list(PRECISIONS)}"
        )
    return precision, set(switches)


def peak_flops(device: torch.device, configured: float | None) -> float | None:
    """The accelerator's bf16 peak (``bench.peak_tflops``, else Lightning's table)."""
    if configured:
        return float(configured) * 1e12
    if device.type != "cuda":
        return None
    return get_available_flops(device, torch.bfloat16)


def _batch(batch: int, vocab: int, length: int, device: torch.device, generator: torch.Generator):
    images = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, generator=generator)
    tokens = torch.randint(4, vocab, (batch, length), generator=generator)
    tokens[:, 0], tokens[:, -1] = 1, 2
    return images.to(device), tokens.to(device)


def measure(
    model_cfg: dict[str, Any],
    variant: str,
    device: torch.device,
    batch: int,
    steps: int,
    vocab: int,
    length: int,
) -> dict[str, float]:
    precision, switches = parse_variant(variant)
    torch.manual_seed(0)
    model = instantiate(model_cfg, vocab_size=vocab, pad_id=0).to(device).train()
    memory_format = torch.channels_last if "channels_last" in switches else torch.preserve_format
    if "channels_last" in switches:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if "compile" in switches else model
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=device.type == "cuda"
    )
    dtype = PRECISIONS[precision]
    autocast = (
        (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else nullcontext
    )
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    images, tokens = _batch(batch, vocab, length, device, torch.Generator().manual_seed(0))
    pixels = images.float().div_(255).contiguous(memory_format=memory_format)

    def train_step() -> None:
        with autocast():
            logits, _ = forward(pixels, tokens[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, vocab).float(), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    @torch.no_grad()
    def decode() -> None:
        with autocast():
            regions = (forward.encode if hasattr(forward, "encode") else model.encode)(pixels)
            greedy_decode(model.decoder, regions, bos_id=1, eos_id=2, pad_id=0, max_len=length)

    train_s = seconds_per_call(train_step, number=steps)  # after a warm-up (compiling) step
    model.eval()
    decode_s = seconds_per_call(decode, number=steps)
    return {"train_images_per_s": batch / train_s, "decode_captions_per_s": batch / decode_s}


def model_flops(model_cfg: dict[str, Any], vocab: int, length: int) -> dict[str, float]:
    """FLOPs per image of one training step (forward + backward) and of the forward alone."""
    torch.manual_seed(0)
    model = instantiate(model_cfg, vocab_size=vocab, pad_id=0).train()
    images, tokens = _batch(1, vocab, length, torch.device("cpu"), torch.Generator())

    def forward() -> tuple[torch.Tensor, torch.Tensor]:
        return model(images.float() / 255, tokens[:, :-1])

    forward_flops = measure_flops(model, forward)
    train = measure_flops(model, forward, lambda out: out[0].float().logsumexp(-1).mean())
    return {"train_flops_per_image": float(train), "forward_flops": float(forward_flops)}


def bench_throughput(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Training and decoding throughput of each of ``bench.throughput_models`` at 224 px."""
    batch, steps = int(cfg.throughput_batch), int(cfg.throughput_steps)
    vocab, length = int(cfg.throughput_vocab), int(cfg.throughput_length)
    peak = peak_flops(device, cfg.get("peak_tflops"))
    result: dict[str, Any] = {"batch": batch, "steps": steps, "image_size": 224}
    ratios = []
    for experiment in cfg.throughput_models:
        model_cfg = preset_model(experiment)
        flops = model_flops(model_cfg, vocab, length)
        result[f"{experiment}/train_GFLOPs_per_image"] = flops["train_flops_per_image"] / 1e9
        rates = {}
        chosen = variants(cfg.throughput_variants, device)
        for variant in chosen:
            rates[variant] = measure(model_cfg, variant, device, batch, steps, vocab, length)
            for key, value in rates[variant].items():
                result[f"{experiment}/{variant}/{key}"] = value
            achieved = rates[variant]["train_images_per_s"] * flops["train_flops_per_image"]
            result[f"{experiment}/{variant}/train_TFLOPs"] = achieved / 1e12
            if peak is not None:
                result[f"{experiment}/{variant}/MFU"] = achieved / peak
        best = max(rates, key=lambda v: rates[v]["train_images_per_s"])
        baseline = rates.get("32-true", rates[chosen[0]])
        ratios.append(rates[best]["train_images_per_s"] / baseline["train_images_per_s"])
        result[f"{experiment}/best"] = best
    result["ratio"] = min(ratios)
    result["note"] = "ratio = fastest variant / fp32 eager training images/s (worst of the models)"
    return result
