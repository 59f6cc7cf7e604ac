"""Speed of our CIDEr-D and BLEU against pycocoevalcap's on a random corpus (``dev`` extra)."""

from __future__ import annotations

import random
from typing import Any

import torch
from omegaconf import DictConfig

from benchmarks.timing import seconds_per_call
from captioning.metrics.bleu import corpus_bleu
from captioning.metrics.cider import corpus_cider_d


def random_corpus(
    n_images: int, n_refs: int, seed: int = 0, vocab_size: int = 500
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Captions of 3..20 words drawn (Zipf-like) from a small vocabulary."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(vocab_size)]
    weights = [1.0 / (rank + 1) for rank in range(vocab_size)]

    def caption() -> str:
        return " ".join(rng.choices(vocab, weights, k=rng.randint(3, 20)))

    references = {f"img{i}": [caption() for _ in range(n_refs)] for i in range(n_images)}
    predictions = {key: caption() for key in references}
    return references, predictions


def compare_metrics(n_images: int = 5000, n_refs: int = 5, seed: int = 0) -> dict[str, float]:
    """Median-of-3 timings (after a warm-up) of our CIDEr-D / BLEU and pycocoevalcap's.

    Returns ``ratio`` (pycocoevalcap time / ours, CIDEr-D), ``ours_s``, ``pycocoevalcap_s``,
    the same three for BLEU (``bleu_ratio``, ``bleu_ours_s``, ``bleu_pycocoevalcap_s``), the
    largest absolute score difference seen (``max_abs_diff``), ``n_images`` and ``n_refs``.
    """
    # imported here: pycocoevalcap is only a dev dependency
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    references, predictions = random_corpus(n_images, n_refs, seed)
    listed = {key: [caption] for key, caption in predictions.items()}
    ours_cider = seconds_per_call(lambda: corpus_cider_d(references, predictions), repeats=3)
    their_cider = seconds_per_call(lambda: Cider().compute_score(references, listed), repeats=3)
    ours_bleu = seconds_per_call(lambda: corpus_bleu(references, predictions), repeats=3)
    their_bleu = seconds_per_call(
        lambda: Bleu(4).compute_score(references, listed, verbose=0), repeats=3
    )

    cider_gap = abs(
        corpus_cider_d(references, predictions) - Cider().compute_score(references, listed)[0]
    )
    bleu_pairs = zip(
        corpus_bleu(references, predictions),
        Bleu(4).compute_score(references, listed, verbose=0)[0],
        strict=True,
    )
    bleu_gap = max(abs(a - b) for a, b in bleu_pairs)
    return {
        "ratio": their_cider / ours_cider,
        "ours_s": ours_cider,
        "pycocoevalcap_s": their_cider,
        "bleu_ratio": their_bleu / ours_bleu,
        "bleu_ours_s": ours_bleu,
        "bleu_pycocoevalcap_s": their_bleu,
        "max_abs_diff": float(max(cider_gap, bleu_gap)),
        "n_images": n_images,
        "n_refs": n_refs,
    }


def bench_metrics(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Our CIDEr-D against pycocoevalcap's on a random corpus of ``bench.metrics_images``."""
    return compare_metrics(n_images=int(cfg.metrics_images), n_refs=5)
