"""METEOR scores from alignment statistics, as ``MeteorScorer`` and coco-caption compute them.

coco-caption sends each image as ``SCORE ||| ref 1 ||| ... ||| ref n ||| prediction`` (the
prediction without ``|||`` and with double spaces halved), gets back the statistics of the
reference that scores best (the first of equal ones), then sends all statistics in one ``EVAL``
line: each image's score is computed from its statistics, the corpus score from their sum
(chunks of perfectly matched segments left out of the sum). Both are reproduced here.
"""

from __future__ import annotations

import gc
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from captioning.metrics.inputs import prepare
from captioning.metrics.meteor.align import Aligner
from captioning.metrics.meteor.normalize import java_tokens, java_trim, normalize
from captioning.metrics.meteor.resources import tables

# METEOR 1.5, English, task "rank" (the default): alpha, beta, gamma, delta; module weights
ALPHA, BETA, GAMMA, DELTA = 0.85, 0.20, 0.60, 0.75
MODULE_WEIGHTS = (1.0, 0.6, 0.8, 0.6)  # exact, stem, synonym, paraphrase
CHUNKS = 20  # index of the chunk count in the 23 statistics


def _divide(numerator: float, denominator: float) -> float:
    """Java's double division: x / 0.0 is infinite, 0.0 / 0.0 and NaN / 0.0 are NaN."""
    if denominator == 0.0:
        if numerator == 0.0 or math.isnan(numerator):
            return math.nan
        return math.copysign(math.inf, numerator)
    return numerator / denominator


def _is_perfect(stats: Sequence[float]) -> bool:
    """All words of both sides matched in one chunk (fragmentation 0)."""
    test_matched = sum(stats[4 + 4 * m] + stats[6 + 4 * m] for m in range(4))
    reference_matched = sum(stats[5 + 4 * m] + stats[7 + 4 * m] for m in range(4))
    return test_matched == stats[0] and reference_matched == stats[1] and stats[CHUNKS] == 1


def score_statistics(stats: Sequence[float]) -> float:
    """``MeteorScorer.computeMetrics``: the METEOR score of 23 sufficient statistics."""
    test_length, reference_length, test_function, reference_function = map(float, stats[:4])
    test_weighted_length = DELTA * (test_length - test_function) + (1.0 - DELTA) * test_function
    reference_weighted_length = (
        DELTA * (reference_length - reference_function) + (1.0 - DELTA) * reference_function
    )
    test_matches = reference_matches = 0.0
    for m, weight in enumerate(MODULE_WEIGHTS):
        test_matches += stats[4 + 4 * m] * weight * DELTA
    for m, weight in enumerate(MODULE_WEIGHTS):
        reference_matches += stats[5 + 4 * m] * weight * DELTA
    for m, weight in enumerate(MODULE_WEIGHTS):
        test_matches += stats[6 + 4 * m] * weight * (1.0 - DELTA)
    for m, weight in enumerate(MODULE_WEIGHTS):
        reference_matches += stats[7 + 4 * m] * weight * (1.0 - DELTA)
    precision = _divide(test_matches, test_weighted_length)
    recall = _divide(reference_matches, reference_weighted_length)
    f_mean = _divide(1.0, _divide(1.0 - ALPHA, precision) + _divide(ALPHA, recall))
    if _is_perfect(stats):
        fragmentation = 0.0
    else:
        fragmentation = _divide(float(stats[CHUNKS]), float(stats[21] + stats[22]) / 2)
    penalty = GAMMA * math.pow(fragmentation, BETA)
    value = f_mean * (1.0 - penalty)
    return 0.0 if math.isnan(value) else max(value, 0.0)


def aggregate(segments: Sequence[Sequence[float]]) -> list[float]:
    """``MeteorStats.addStats`` over ``segments``: sums, chunks of perfect ones left out."""
    total = [0.0] * 23
    for stats in segments:
        for k, value in enumerate(stats):
            if k != CHUNKS:
                total[k] += value
        if not _is_perfect(stats):
            total[CHUNKS] += stats[CHUNKS]
    return total


def _split_line(references: Sequence[str], prediction: str) -> tuple[list[str], str]:
    """The references and test coco-caption's ``SCORE`` line hands METEOR, after its split
    on ``|||`` (Java drops trailing empty parts) and trim."""
    hypothesis = prediction.replace("|||", "").replace("  ", " ")
    parts = " ||| ".join(("SCORE", " ||| ".join(references), hypothesis)).split("|||")
    while parts and parts[-1] == "":
        parts.pop()
    return [java_trim(p) for p in parts[1:-1]], java_trim(parts[-1])


class MeteorScorer:
    """Scores segments; words, sentences and segments are memoised across calls."""

    def __init__(self) -> None:
        self.tables = tables()
        self.aligner = Aligner(self.tables)
        self.words = lru_cache(maxsize=1 << 17)(self._words)
        self.segment = lru_cache(maxsize=1 << 16)(self._segment)

    def _words(self, line: str) -> tuple[str, ...]:
        return tuple(java_tokens(normalize(line, self.tables.prefixes)))

    def _segment(self, test: str, references: tuple[str, ...]) -> tuple[float, ...]:
        """The statistics of the best-scoring reference (the first of equal ones)."""
        test_words = self.words(test)
        best, best_score = None, -1.0
        for reference in references:
            stats = self.aligner.align(test_words, self.words(reference))
            value = score_statistics(stats)
            if value > best_score:
                best, best_score = stats, value
        return best

    def statistics(
        self, references: Mapping[Any, Sequence[str]], predictions: Mapping[Any, str]
    ) -> dict[Any, tuple[float, ...]]:
        """The statistics METEOR returns for each image's coco-caption ``SCORE`` line."""
        lines = {k: _split_line(references[k], p) for k, p in predictions.items()}
        self.aligner.prepare(
            self.words(line) for refs, test in lines.values() for line in (test, *refs)
        )
        return {k: self.segment(test, tuple(refs)) for k, (refs, test) in lines.items()}


_lock = threading.Lock()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile: scoring makes many small acyclic objects, and
    the collector's passes over the large memo tables would take half the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@lru_cache(maxsize=1)
def _scorer() -> MeteorScorer:
    return MeteorScorer()


def meteor_score(
    references: Mapping[Any, Sequence[str]],
    predictions: Mapping[Any, str],
    tokenized: bool = False,
) -> tuple[float, dict[Any, float]]:
    """METEOR 1.5 as coco-caption runs it (``-l en -norm``), without Java.

    Args:
        references: image id -> reference captions (at least one each), same ids as
            ``predictions``.
        predictions: image id -> one generated caption (may be empty: it scores 0 and adds
            its first reference's words to the corpus totals, as METEOR does).
        tokenized: the captions are already PTB-tokenised; otherwise both sides go through
            :func:`~captioning.text.tokenize` first, as :func:`~captioning.metrics.score` does.

    Returns:
        ``(corpus score, {image id: segment score})``; the corpus score is METEOR's score of
        the summed statistics, not the mean of the segment scores.
    """
    refs, preds = prepare(references, predictions, tokenized)
    with _lock, _collector_paused():  # the memo tables are shared by the threads of a process
        scorer = _scorer()
        segments = scorer.statistics(refs, preds)
    per_image = {k: score_statistics(stats) for k, stats in segments.items()}
    return score_statistics(aggregate(list(segments.values()))), per_image
