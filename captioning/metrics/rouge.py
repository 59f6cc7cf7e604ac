"""ROUGE-L exactly as coco-caption's ``Rouge()``: LCS F-measure, beta 1.2, mean over images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

BETA = 1.2


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, references: Sequence[str]) -> float:
    # split(" ") as coco-caption does: an empty caption is one empty token, not none
    words = candidate.split(" ")
    precision = recall = 0.0
    for reference in references:
        ref_words = reference.split(" ")
        common = lcs_length(ref_words, words)
        precision = max(precision, common / len(words))
        recall = max(recall, common / len(ref_words))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + BETA**2) * precision * recall / (recall + BETA**2 * precision)


def corpus_rouge_l(
    references: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
) -> float:
    scores = [rouge_l(predictions[key], references[key]) for key in predictions]
    return sum(scores) / len(scores)
