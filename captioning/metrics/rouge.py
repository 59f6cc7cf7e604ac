"""ROUGE-L exactly as coco-caption's ``Rouge()``: LCS F-measure, beta 1.2, mean over images.

Per image, precision and recall are each the maximum over the references of LCS / length
(separately, as coco-caption does), and captions are split on single spaces (``split(" ")``:
an empty caption is one empty word, not none). The LCS length is computed bit-parallel
(Hyyrö 2004): one big-integer update per reference word instead of a full DP table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BETA = 1.2


def _match_masks(words: Sequence[str]) -> dict[str, int]:
    """Bit i of ``masks[w]`` is set where ``words[i] == w``."""
    masks: dict[str, int] = {}
    for i, word in enumerate(words):
        masks[word] = masks.get(word, 0) | (1 << i)
    return masks


def _lcs(masks: Mapping[str, int], size: int, other: Sequence[str]) -> int:
    """Length of the longest common subsequence of the masked word list and ``other``."""
    full = (1 << size) - 1
    v = full
    for word in other:
        u = v & masks.get(word, 0)
        v = (v + u) | (v - u)
    # each zero bit among the low ``size`` bits is one matched word
    return size - (v & full).bit_count()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length of two word lists."""
    return _lcs(_match_masks(a), len(a), b)


def rouge_l(candidate: str, references: Sequence[str], beta: float = BETA) -> float:
    """ROUGE-L of one tokenised candidate against its tokenised references."""
    words = candidate.split(" ")
    masks = _match_masks(words)
    precision = recall = 0.0
    for reference in references:
        ref_words = reference.split(" ")
        common = _lcs(masks, len(words), ref_words)
        precision = max(precision, common / len(words))
        recall = max(recall, common / len(ref_words))
    if precision == 0 or recall == 0:
        return 0.0
    return ((1 + beta**2) * precision * recall) / (recall + beta**2 * precision)


def rouge_l_scores(
    references: Mapping[Any, Sequence[str]], predictions: Mapping[Any, str]
) -> dict[Any, float]:
    """Per-image ROUGE-L."""
    return {key: rouge_l(prediction, references[key]) for key, prediction in predictions.items()}


def corpus_rouge_l(
    references: Mapping[Any, Sequence[str]], predictions: Mapping[Any, str]
) -> float:
    """Mean ROUGE-L over the images of ``predictions`` (numpy's mean, as coco-caption)."""
    return float(np.mean(list(rouge_l_scores(references, predictions).values())))
