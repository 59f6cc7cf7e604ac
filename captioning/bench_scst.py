"""SCST benchmark for ``make bench``: the reward's share of a self-critical training step."""

from __future__ import annotations

import time
from typing import Any

import torch
from omegaconf import DictConfig

from captioning.bench_data import _datamodule, bench_shapes
from captioning.scst import CaptionReward, cached_frequencies


def bench_scst_reward(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Time of a whole SCST step (sampling, greedy baseline, reward, backward, update) over
    the time of its reward alone: the target is a reward under 20% of the step (ratio >= 5)."""
    from captioning.bench import MODEL_CFG
    from captioning.module import CaptioningModule

    root = bench_shapes(cfg, int(cfg.scst_images))
    data = _datamodule(root, int(cfg.batch_size), 0, image_size=64)  # the Shapes model's input
    torch.manual_seed(0)
    module = CaptioningModule(
        model={**MODEL_CFG, "objective": "scst"},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 5e-5},
        scheduler=None, loss={}, decoding={"max_len": 20}, vocab=data.vocab.tokens,
        scst={"samples": int(cfg.scst_samples), "max_len": 20, "baseline": "greedy"},
    ).to(device)  # fmt: skip
    references = data.references("train")
    reward = CaptionReward(references, cached_frequencies(references, root / ".cache", "bench"))
    spent = []

    def timed_reward(images, captions):
        start = time.perf_counter()
        out = reward(images, captions)
        spent.append(time.perf_counter() - start)
        return out

    module.reward = timed_reward
    optimizer = torch.optim.Adam(module.parameters(), lr=5e-5)
    batches = list(data.train_dataloader())[: int(cfg.scst_steps) + 1]
    steps = []
    for i, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        spent.clear()
        start = time.perf_counter()
        loss = module.scst_step(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first step warms up
            steps.append((time.perf_counter() - start, sum(spent)))
    step_s = sum(s for s, _ in steps) / len(steps)
    reward_s = sum(r for _, r in steps) / len(steps)
    return {
        "ratio": step_s / reward_s,
        "step_s": step_s,
        "reward_s": reward_s,
        "reward_share": reward_s / step_s,
        "images_per_step": int(cfg.batch_size),
        "samples_per_image": int(cfg.scst_samples),
        "note": "ratio = SCST step time / its reward time (>= 5: reward < 20% of the step)",
    }
