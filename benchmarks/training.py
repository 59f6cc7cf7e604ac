"""Training benchmarks: our LightningModule against a plain loop, and the SCST reward's share."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from benchmarks.data import bench_shapes, shapes_datamodule
from benchmarks.models import IMAGE, LENGTH, VOCAB, node, train_config
from benchmarks.timing import seconds_per_call
from captioning.module import CaptioningModule
from captioning.scst import CaptionReward, cached_frequencies


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


def bench_loop_overhead(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Our LightningModule's training steps against a hand-written loop on the same model,
    both with the default ``make train`` model, optimizer and gradient clipping."""
    steps, repeats = int(cfg.loop_steps), int(cfg.repeats)
    batches = _batches(steps, int(cfg.batch_size))
    vocab = ["<pad>", "<bos>", "<eos>", "<unk>", *[f"w{i}" for i in range(VOCAB - 4)]]
    train = train_config()
    model, optimizer_cfg = node(train, "model"), node(train, "optimizer")
    captioner = {k: v for k, v in model.items() if k != "objective"}
    clip = float(train.trainer.gradient_clip_val)

    def plain() -> None:
        torch.manual_seed(0)
        net = instantiate(captioner, vocab_size=VOCAB, pad_id=0).to(device).train()
        optimizer = torch.optim.AdamW(
            net.parameters(), lr=optimizer_cfg["lr"], weight_decay=optimizer_cfg["weight_decay"]
        )
        for batch in batches:
            images = batch["images"].to(device, non_blocking=True).float().div_(255)
            tokens = batch["tokens"].to(device, non_blocking=True)
            logits, _ = net(images, tokens[:, :-1])
            loss = F.cross_entropy(
                logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1), ignore_index=0
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            optimizer.step()

    def ours() -> None:
        torch.manual_seed(0)
        module = CaptioningModule(
            model=model,
            optimizer=optimizer_cfg,
            scheduler=None,
            loss=node(train, "loss"),
            decoding={},
            vocab=vocab,
        )
        trainer = L.Trainer(
            accelerator=device.type, devices=1, max_steps=steps, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            gradient_clip_val=clip, num_sanity_val_steps=0, limit_val_batches=0,
        )  # fmt: skip
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))

    plain_s = seconds_per_call(plain, repeats)
    ours_s = seconds_per_call(ours, repeats)
    return {
        "ratio": plain_s / ours_s,
        "plain_step_s": plain_s / steps,
        "ours_step_s": ours_s / steps,
        "ours_images_per_s": steps * int(cfg.batch_size) / ours_s,
        "steps": steps,
        "batch_size": int(cfg.batch_size),
        "note": "ours includes building the Trainer each repetition",
    }


def bench_scst_reward(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Time of a whole SCST step (sampling, greedy baseline, reward, backward, update) over
    the time of its reward alone: the target is a reward under 20% of the step (ratio >= 5)."""
    root = bench_shapes(cfg, int(cfg.scst_images))
    data = shapes_datamodule(root, int(cfg.batch_size), 0, image_size=IMAGE)  # the model's input
    train = train_config("model.objective=scst")
    torch.manual_seed(0)
    module = CaptioningModule(
        model=node(train, "model"),
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 5e-5},
        scheduler=None, loss={}, decoding={"max_len": 20}, vocab=data.vocab.tokens,
        scst={"samples": int(cfg.scst_samples), "max_len": 20, "baseline": "greedy"},
    ).to(device)  # fmt: skip
    references = data.references("train")
    reward = CaptionReward(references, cached_frequencies(references, root / ".cache", "bench"))
    spent: list[float] = []  # reward seconds of each step

    def timed_reward(images, captions):
        out = []
        spent[-1] += seconds_per_call(lambda: out.append(reward(images, captions)), warmup=0)
        return out[0]

    module.reward = timed_reward
    optimizer = torch.optim.Adam(module.parameters(), lr=5e-5)
    batches = list(data.train_dataloader())[: int(cfg.scst_steps) + 1]
    steps, queue = len(batches) - 1, iter(batches)

    def step() -> None:
        batch = {k: v.to(device) for k, v in next(queue).items()}
        spent.append(0.0)
        loss = module.scst_step(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step_s = seconds_per_call(step, number=steps)  # the first batch's step warms up
    reward_s = sum(spent[1:]) / steps
    return {
        "ratio": step_s / reward_s,
        "step_s": step_s,
        "reward_s": reward_s,
        "reward_share": reward_s / step_s,
        "images_per_step": int(cfg.batch_size),
        "samples_per_image": int(cfg.scst_samples),
        "note": "ratio = SCST step time / its reward time (>= 5: reward < 20% of the step)",
    }
