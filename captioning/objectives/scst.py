"""Self-critical sequence training (Rennie et al. 2017) over ``captioning.scst``'s pieces."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from captioning.decoding import greedy_decode
from captioning.scst import advantages, check_settings, policy_loss, sample_captions
from captioning.text import Vocabulary

# image indices and their captions -> one reward per caption (captioning.scst.CaptionReward)
Reward = Callable[[Sequence[int], Sequence[str]], np.ndarray]


class SelfCritical:
    """Sample captions, score them against the training references, and weight their
    log-probabilities by the advantage over a baseline (``scst.baseline``).

    Args:
        settings: the ``scst`` config node (``samples``, ``max_len``, ``temperature``,
            ``top_k``, ``baseline``); checked here.
        vocab: the vocabulary (its special ids; ``<unk>`` is never sampled).
        max_len: longest sampled caption when ``settings`` has no ``max_len``.
    """

    def __init__(self, settings: Mapping[str, Any], vocab: Vocabulary, max_len: int) -> None:
        check_settings(settings)
        self.vocab = vocab
        self.samples = int(settings.get("samples", 5))
        self.max_len = int(settings.get("max_len", max_len))
        self.temperature = float(settings.get("temperature", 1.0))
        self.top_k = int(settings.get("top_k", 0))
        self.greedy_baseline = settings.get("baseline", "greedy") == "greedy"

    def __call__(
        self,
        captioner: torch.nn.Module,
        images: torch.Tensor,
        indices: torch.Tensor,
        reward: Reward,
    ) -> dict[str, torch.Tensor]:
        """``loss`` and the logged ``reward``, ``baseline``, ``advantage``, ``entropy``.

        ``images`` are the batch's float images, ``indices`` their image indices (an image
        may recur: with ``captions_per_image=all`` each caption is a row).
        """
        n, vocab = self.samples, self.vocab
        # one row per image
        unique, inverse = torch.unique(indices, return_inverse=True)
        positions = torch.arange(inverse.numel(), device=inverse.device)
        rows = torch.full_like(unique, inverse.numel()).scatter_reduce(
            0, inverse, positions, reduce="amin"
        )
        regions, mask = captioner.encode_masked(images[rows])  # (B, N, D), (B, N) | None
        ids = {"bos_id": vocab.bos_id, "eos_id": vocab.eos_id, "pad_id": vocab.pad_id}
        samples = sample_captions(
            captioner.decoder, regions, n, max_len=self.max_len, temperature=self.temperature,
            top_k=self.top_k, banned=(vocab.unk_id,), mask=mask, **ids,
        )  # fmt: skip
        image_list = [i for i in unique.tolist() for _ in range(n)]
        rewards = reward(image_list, [vocab.decode(row) for row in samples.tokens.tolist()])
        baseline = None
        if self.greedy_baseline:
            decoder = captioner.decoder
            was_training = decoder.training
            decoder.eval()
            with torch.no_grad():
                greedy, _ = greedy_decode(
                    decoder, regions.detach(), max_len=self.max_len, mask=mask, **ids
                )
            decoder.train(was_training)
            baseline = reward(unique.tolist(), [vocab.decode(r) for r in greedy.tolist()])
        advantage = advantages(rewards, baseline, n)
        loss = policy_loss(
            samples, torch.as_tensor(advantage, dtype=torch.float32, device=regions.device)
        )
        return {
            "loss": loss,
            "reward": torch.tensor(float(rewards.mean())),
            "baseline": torch.tensor(float(np.mean(baseline if baseline is not None else rewards))),
            "advantage": torch.tensor(float(np.abs(advantage).mean())),
            "entropy": samples.entropy.detach(),
        }
