"""Self-critical sequence training (Rennie et al. 2017): REINFORCE with a CIDEr-D reward.

Per image, ``n`` captions are sampled from the decoder; each earns
``w_cider * CIDEr-D + w_bleu * BLEU-4`` against the image's references, with CIDEr-D's
document frequencies taken from the training references (computed once, cached on disk);
the advantage over a baseline (the greedy caption's reward, or the mean reward of the
image's other samples) weights the log-probability of the sampled words.
The reward is the metrics code itself (``captioning.metrics``), vectorised over the batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from captioning.decoding import PER_IMAGE, filter_logits
from captioning.files import write_json
from captioning.metrics.bleu import build_corpus, sentence_bleu_array
from captioning.metrics.cider import DocumentFrequencies, cider_d_array, document_frequencies
from captioning.models.state import start_state

log = logging.getLogger(__name__)

BASELINES = ("greedy", "mean")


@dataclass
class Samples:
    """``n`` sampled captions per image, image-major (rows ``i*n .. i*n+n-1`` are image i).

    tokens (M, L): sampled ids, ``<pad>`` after ``<eos>``; log_probs (M, L): log-probability
    of each sampled token under the sampling distribution (with grad); mask (M, L): the token
    was generated (up to and including ``<eos>``); entropy: mean entropy per generated token.
    """

    tokens: torch.Tensor
    log_probs: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor


def sample_captions(
    decoder: nn.Module,
    regions: torch.Tensor,
    n: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_len: int = 20,
    temperature: float = 1.0,
    top_k: int = 0,
    banned: Sequence[int] = (),
    mask: torch.Tensor | None = None,
) -> Samples:
    """Multinomial sampling over the decoder's ``init_state``/``step``, all images at once
    (``mask`` (B, N): the real regions of padded region sets)."""
    rows = regions.shape[0] * n
    # one memory row per image for its n samples (the attention groups them), like beam search
    state = start_state(decoder, regions, mask).index_select(
        torch.arange(regions.shape[0], device=regions.device).repeat_interleave(n),
        skip=PER_IMAGE,
    )
    previous = torch.full((rows,), bos_id, dtype=torch.long, device=regions.device)
    finished = torch.zeros(rows, dtype=torch.bool, device=regions.device)
    never = [pad_id, bos_id, *banned]
    tokens, log_probs, masks, entropies = [], [], [], []
    for _ in range(max_len):
        step_log_probs, _, state = decoder.step(previous, state)  # (M, V)
        logits = step_log_probs.float() / temperature
        logits[:, never] = float("-inf")
        distribution = F.log_softmax(filter_logits(logits, top_k), dim=-1)  # (M, V)
        choice = torch.multinomial(distribution.exp(), 1).squeeze(1)  # (M,)
        active = ~finished
        choice = torch.where(finished, torch.full_like(choice, pad_id), choice)
        tokens.append(choice)
        chosen = distribution.gather(1, choice.unsqueeze(1)).squeeze(1)
        log_probs.append(torch.where(active, chosen, torch.zeros_like(chosen)))  # no -inf * 0
        masks.append(active)
        probs = distribution.exp()
        entropies.append(-(probs * distribution.clamp(min=-1e9)).sum(-1) * active)
        finished = finished | (choice == eos_id)
        previous = choice
        if bool(finished.all()):
            break
    mask = torch.stack(masks, dim=1)
    return Samples(
        tokens=torch.stack(tokens, dim=1),
        log_probs=torch.stack(log_probs, dim=1),
        mask=mask,
        entropy=torch.stack(entropies, dim=1).sum() / mask.sum().clamp(min=1),
    )


class CaptionReward:
    """``w_cider * CIDEr-D + w_bleu * BLEU-4`` of each caption against its image's references.

    Args:
        references: image index -> tokenised, space-joined references (the training split).
        frequencies: CIDEr-D document frequencies (``document_frequencies(references)``).
        w_cider / w_bleu: the weights of the two metrics.
    """

    def __init__(
        self,
        references: Mapping[int, Sequence[str]],
        frequencies: DocumentFrequencies,
        w_cider: float = 1.0,
        w_bleu: float = 0.0,
    ) -> None:
        self.references = references
        self.frequencies = frequencies
        self.w_cider = w_cider
        self.w_bleu = w_bleu

    def __call__(self, images: Sequence[int], captions: Sequence[str]) -> np.ndarray:
        """One reward per caption; ``images[m]`` is the image of ``captions[m]``."""
        refs = {m: self.references[image] for m, image in enumerate(images)}
        corpus = build_corpus(refs, dict(enumerate(captions)), keep_grams=self.w_cider != 0)
        reward = np.zeros(len(captions))
        if self.w_cider:
            reward += self.w_cider * cider_d_array(corpus, frequencies=self.frequencies)
        if self.w_bleu:
            reward += self.w_bleu * sentence_bleu_array(corpus)
        return reward


def cached_frequencies(
    references: Mapping[int, Sequence[str]], folder: Path, fingerprint: str
) -> DocumentFrequencies:
    """Training-set document frequencies, computed once and kept as JSON in ``folder``,
    keyed by the data fingerprint and a hash of the references."""
    digest = hashlib.sha256(
        json.dumps([fingerprint, sorted((k, list(v)) for k, v in references.items())]).encode()
    ).hexdigest()[:16]
    path = folder / f"cider-df-{digest}.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return DocumentFrequencies(data["counts"], int(data["images"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("Ignoring the unreadable document-frequency cache %s (%s)", path, error)
    frequencies = document_frequencies(references)
    try:
        write_json(path, {"counts": frequencies.counts, "images": frequencies.images}, indent=None)
        log.info("CIDEr-D document frequencies of %d images cached in %s", len(references), path)
    except OSError as error:  # a full disk included: the cache only saves the next start time
        log.warning("Cannot cache the document frequencies in %s (%s)", folder, error)
    return frequencies


def advantages(rewards: np.ndarray, baseline: np.ndarray | None, n: int) -> np.ndarray:
    """Reward minus the baseline: the greedy caption's reward (given, one per image), or the
    mean reward of the image's other samples (``baseline=None``)."""
    per_image = rewards.reshape(-1, n)
    if baseline is None:
        if n < 2:
            raise ValueError("scst.baseline=mean needs scst.samples >= 2")
        others = (per_image.sum(axis=1, keepdims=True) - per_image) / (n - 1)
        return (per_image - others).reshape(-1)
    return (per_image - baseline.reshape(-1, 1)).reshape(-1)


def policy_loss(samples: Samples, advantage: torch.Tensor) -> torch.Tensor:
    """REINFORCE: minus the advantage-weighted log-probability, per generated token."""
    weighted = samples.log_probs * advantage.unsqueeze(1) * samples.mask
    return -weighted.sum() / samples.mask.sum().clamp(min=1)


def check_settings(settings: Mapping[str, Any]) -> None:
    if settings.get("baseline", "greedy") not in BASELINES:
        raise ValueError(f"scst.baseline must be one of {BASELINES}, got {settings['baseline']!r}")
    if int(settings.get("samples", 5)) < 1:
        raise ValueError("scst.samples must be >= 1")
