"""``score``: coco-caption's numbers (BLEU-1..4, ROUGE-L, CIDEr-D, METEOR) for a set of predictions."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from captioning.metrics.bleu import build_corpus, corpus_bleu
from captioning.metrics.cider import cider_d_array
from captioning.metrics.inputs import prepare
from captioning.metrics.rouge import corpus_rouge_l

log = logging.getLogger(__name__)

METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D", "METEOR")
METEOR_BACKENDS = {True: "python", "python": "python", "java": "java", False: None}


def meteor_backend(meteor: bool | str) -> str | None:
    """``"python"``, ``"java"`` or None (not computed) for ``score``'s ``meteor`` argument."""
    try:
        return METEOR_BACKENDS[meteor]
    except (KeyError, TypeError):
        raise ValueError(
            f"meteor must be True or 'python' (our METEOR), 'java' (pycocoevalcap's Java "
            f"scorer) or False (none), got {meteor!r}"
        ) from None


def score(
    references: Mapping[Any, Sequence[str]],
    predictions: Mapping[Any, str],
    tokenized: bool = False,
    meteor: bool | str = True,
) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L, CIDEr-D and METEOR of ``predictions``, equal to coco-caption's.

    Args:
        references: image id -> reference captions (at least one each), same ids as
            ``predictions``.
        predictions: image id -> one generated caption (may be empty).
        tokenized: the captions are already PTB-tokenised, lowercased and space-joined;
            otherwise both sides go through :func:`tokenize` first.
        meteor: True or ``"python"``: METEOR 1.5 by :func:`~captioning.metrics.meteor_score`
            (no Java, no subprocess); ``"java"``: pycocoevalcap's Java scorer, for
            cross-checks (skipped, with a warning, when ``java`` is not on PATH); False: none.

    Returns:
        ``{"BLEU-1", ..., "BLEU-4", "ROUGE-L", "CIDEr-D"}`` (+ ``"METEOR"``) -> value.
    """
    backend = meteor_backend(meteor)
    refs, preds = prepare(references, predictions, tokenized)
    corpus = build_corpus(refs, preds)  # shared by BLEU and CIDEr-D
    scores = {f"BLEU-{k + 1}": value for k, value in enumerate(corpus_bleu(corpus=corpus))}
    scores["ROUGE-L"] = corpus_rouge_l(refs, preds)
    scores["CIDEr-D"] = float(np.mean(cider_d_array(corpus)))
    if backend == "python":
        # imported here: the metrics package imports this module first
        from captioning.metrics.meteor import meteor_score

        scores["METEOR"] = meteor_score(refs, preds, tokenized=True)[0]
    elif backend == "java":
        value = _java_meteor(refs, preds)
        if value is not None:
            scores["METEOR"] = value
    return scores


def _java_meteor(refs: Mapping[Any, list[str]], preds: Mapping[Any, str]) -> float | None:
    if shutil.which("java") is None:
        log.warning("METEOR (meteor='java') skipped: it needs Java on PATH")
        return None
    # imported lazily: Meteor starts a JVM
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        value, _ = scorer.compute_score(dict(refs), {k: [p] for k, p in preds.items()})
    finally:
        del scorer  # its __del__ stops the JVM
    return float(value)


def per_image_cider(
    references: Mapping[Any, Sequence[str]], predictions: Mapping[Any, str], tokenized: bool = False
) -> dict[Any, float]:
    """CIDEr-D of each image (document frequencies over the whole set given)."""
    refs, preds = prepare(references, predictions, tokenized)
    corpus = build_corpus(refs, preds)
    return dict(zip(corpus.keys, cider_d_array(corpus).tolist(), strict=True))
