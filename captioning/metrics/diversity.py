"""How varied a model's captions are: within each image's n-best set, and over a whole split.

Within an image's set of n captions (``n_best > 1``), the measures the diverse-captioning
papers report, as their reference code computes them (ruotianluo's ``eval_multi.py``):

- ``mBLEU-4``: each caption's BLEU-4 against the image's other n-1 captions, as coco-caption
  scores a corpus (caption i of every image is the corpus' prediction), averaged over i. Lower
  is more diverse.
- ``div-1`` / ``div-2``: per image, distinct unigrams (bigrams) of its set over the number of
  words in the set, averaged over images (Shetty et al. 2017). Higher is more diverse.
- ``self-CIDEr`` (Wang & Chan 2019): per image, the kernel ``K[i, j]`` = CIDEr-D of caption i
  against caption j alone (document frequencies of the split's references), and
  ``-log(sqrt(l_max) / sum(sqrt(l))) / log(n)`` over its eigenvalues ``l`` (negative ones
  clipped to 0, the lower triangle read as ``numpy.linalg.eigvalsh`` does): 0 when the n
  captions say one thing, 1 when they share nothing. Averaged over images.

Over a split (any ``n_best``; the first caption of each image):

- ``vocab_usage``: distinct words generated / the words the model can generate (its
  vocabulary without ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``).
- ``novel``: share of captions that are not, word for word, one of the training captions.
- ``mean_length``: mean caption length in words.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from captioning.metrics.bleu import build_corpus, corpus_bleu
from captioning.metrics.cider import cider_d_array, document_frequencies

SET_NAMES = ("mBLEU-4", "div-1", "div-2", "self-CIDEr")
SPLIT_NAMES = ("vocab_usage", "novel", "mean_length")


def _sizes(captions: Mapping[Any, Sequence[str]]) -> int:
    sizes = {len(caps) for caps in captions.values()}
    if not captions or len(sizes) != 1 or min(sizes) < 2:
        raise ValueError(
            "diversity needs the same number (>= 2) of captions for every image, got "
            f"{sorted(sizes) if sizes else 'no images'}"
        )
    return sizes.pop()


def mbleu4(captions: Mapping[Any, Sequence[str]]) -> float:
    """Mean over i of the corpus BLEU-4 of every image's caption i against its other ones."""
    n = _sizes(captions)
    keys = list(captions)
    values = []
    for i in range(n):
        others = {k: [c for j, c in enumerate(captions[k]) if j != i] for k in keys}
        values.append(corpus_bleu(others, {k: captions[k][i] for k in keys})[3])
    return float(np.mean(values))


def distinct_ngrams(captions: Mapping[Any, Sequence[str]], n: int) -> float:
    """Per image, distinct n-grams of its captions / the words of its captions; the mean."""
    _sizes(captions)
    shares = []
    for caps in captions.values():
        words = [caption.split() for caption in caps]
        grams = {tuple(w[i : i + n]) for w in words for i in range(len(w) - n + 1)}
        total = sum(len(w) for w in words)
        shares.append(len(grams) / total if total else 0.0)
    return float(np.mean(shares))


def self_cider(
    captions: Mapping[Any, Sequence[str]], references: Mapping[Any, Sequence[str]]
) -> float:
    """Wang & Chan's self-CIDEr of each image's captions, averaged (see the module doc)."""
    n = _sizes(captions)
    frequencies = document_frequencies(references)
    pairs = [(k, i, j) for k in captions for i in range(n) for j in range(n)]
    hypotheses = {p: captions[p[0]][p[1]] for p in pairs}
    single = {p: [captions[p[0]][p[2]]] for p in pairs}
    corpus = build_corpus(single, hypotheses, keep_grams=True)
    kernels = cider_d_array(corpus, frequencies=frequencies).reshape(len(captions), n, n)
    eigenvalues = np.clip(np.linalg.eigvalsh(kernels / 10.0), 0.0, None)  # (I, n) ascending
    roots = np.sqrt(eigenvalues)
    total = roots.sum(axis=1)
    # an image whose captions are all empty has K = 0: nothing to tell apart, diversity 0
    ratio = np.divide(roots[:, -1], total, out=np.ones_like(total), where=total > 0)
    return float(np.mean(-np.log(ratio) / np.log(n)))


def set_diversity(
    captions: Mapping[Any, Sequence[str]], references: Mapping[Any, Sequence[str]]
) -> dict[str, float]:
    """``mBLEU-4``, ``div-1``, ``div-2`` and ``self-CIDEr`` of tokenised, space-joined n-best
    captions (``references``: the split's, for self-CIDEr's document frequencies)."""
    return {
        "mBLEU-4": mbleu4(captions),
        "div-1": distinct_ngrams(captions, 1),
        "div-2": distinct_ngrams(captions, 2),
        "self-CIDEr": self_cider(captions, references),
    }


def split_usage(
    predictions: Mapping[Any, str],
    vocabulary_size: int,
    training_captions: Collection[str] | None = None,
) -> dict[str, float]:
    """``vocab_usage``, ``novel`` (with ``training_captions``) and ``mean_length`` of one caption
    per image (tokenised, space-joined)."""
    if vocabulary_size < 1:
        raise ValueError(f"vocabulary_size must be >= 1, got {vocabulary_size}")
    words = [caption.split() for caption in predictions.values()]
    used = {w for caption in words for w in caption}
    scores = {
        "vocab_usage": len(used) / vocabulary_size,
        "mean_length": float(np.mean([len(w) for w in words])) if words else 0.0,
    }
    if training_captions is not None:
        seen = (
            training_captions
            if isinstance(training_captions, set | frozenset)
            else set(training_captions)
        )
        novel = [" ".join(w) not in seen for w in words]
        scores["novel"] = float(np.mean(novel)) if novel else 0.0
    return scores
