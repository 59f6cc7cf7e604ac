"""``score``: coco-caption's numbers for a set of predictions, in Python."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from captioning.metrics.bleu import corpus_bleu
from captioning.metrics.cider import cider_d_scores
from captioning.metrics.rouge import corpus_rouge_l
from captioning.metrics.tokenizer import tokenize

log = logging.getLogger(__name__)


def _check(references: Mapping[Any, Sequence[str]], predictions: Mapping[Any, str]) -> None:
    if not predictions:
        raise ValueError("no predictions to score")
    missing = [k for k in predictions if k not in references]
    if missing:
        raise ValueError(f"predictions for images without references: {missing[:5]}")
    empty = [k for k in predictions if not references[k]]
    if empty:
        raise ValueError(f"images with no reference captions: {empty[:5]}")


def score(
    references: Mapping[Any, Sequence[str]],
    predictions: Mapping[Any, str],
    tokenized: bool = False,
    meteor: bool = False,
) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D (+ METEOR with Java) of ``predictions``.

    Args:
        references: image id -> reference captions (at least one each).
        predictions: image id -> one generated caption; the images scored are these.
        tokenized: the captions are already tokenised and space-joined.
        meteor: also compute METEOR through pycocoevalcap (needs Java on PATH).
    """
    _check(references, predictions)
    if tokenized:
        refs = {k: list(references[k]) for k in predictions}
        preds = dict(predictions)
    else:
        refs = {k: [" ".join(tokenize(r)) for r in references[k]] for k in predictions}
        preds = {k: " ".join(tokenize(p)) for k, p in predictions.items()}
    bleu = corpus_bleu(refs, preds)
    cider = cider_d_scores(refs, preds)
    scores = {f"BLEU-{k + 1}": value for k, value in enumerate(bleu)}
    scores["ROUGE-L"] = corpus_rouge_l(refs, preds)
    scores["CIDEr-D"] = sum(cider.values()) / len(cider)
    if meteor:
        if shutil.which("java") is None:
            log.warning("METEOR skipped: it needs Java on PATH")
        else:
            from pycocoevalcap.meteor.meteor import Meteor

            value, _ = Meteor().compute_score(refs, {k: [p] for k, p in preds.items()})
            scores["METEOR"] = float(value)
    return scores


def per_image_cider(
    references: Mapping[Any, Sequence[str]], predictions: Mapping[Any, str], tokenized: bool = False
) -> dict[Any, float]:
    """CIDEr-D of each image (document frequencies over the whole set given)."""
    _check(references, predictions)
    if not tokenized:
        references = {k: [" ".join(tokenize(r)) for r in references[k]] for k in predictions}
        predictions = {k: " ".join(tokenize(p)) for k, p in predictions.items()}
    return cider_d_scores(references, predictions)
