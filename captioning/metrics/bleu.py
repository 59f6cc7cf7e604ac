"""Corpus BLEU-1..4 exactly as coco-caption's ``Bleu(4)`` computes it.

Its quirks are kept on purpose: the reference length is the one closest to the candidate's
(ties to the shorter), the brevity penalty is corpus-level, and the precisions carry its
epsilons (``tiny`` = 1e-15 in numerators, ``small`` = 1e-9 in denominators).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

TINY, SMALL = 1e-15, 1e-9


def ngram_counts(words: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(
        tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1)
    )


def corpus_bleu(
    references: Mapping[str, Sequence[str]], predictions: Mapping[str, str], n: int = 4
) -> list[float]:
    """BLEU-1..n over tokenised, space-joined captions (one prediction per key)."""
    correct, guess = [0] * n, [0] * n
    test_total = ref_total = 0
    for key, prediction in predictions.items():
        words = prediction.split()
        test_len = len(words)
        max_ref: dict[tuple[str, ...], int] = {}
        ref_lens = []
        for reference in references[key]:
            ref_words = reference.split()
            ref_lens.append(len(ref_words))
            for gram, count in ngram_counts(ref_words, n).items():
                if count > max_ref.get(gram, 0):
                    max_ref[gram] = count
        ref_total += min(ref_lens, key=lambda length: (abs(length - test_len), length))
        test_total += test_len
        for gram, count in ngram_counts(words, n).items():
            correct[len(gram) - 1] += min(max_ref.get(gram, 0), count)
        for k in range(n):
            guess[k] += max(0, test_len - k)
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + TINY) / (guess[k] + SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_total + TINY) / (ref_total + SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores
