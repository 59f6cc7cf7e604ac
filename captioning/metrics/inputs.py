"""What every score takes: image id -> references and image id -> one prediction, checked
and PTB-tokenised the same way (``score``, ``meteor_score``, ``per_image_cider``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from captioning.text import tokenize


def _few(keys: list[Any], limit: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def check(references: Mapping[Any, Sequence[str]], predictions: Mapping[Any, str]) -> None:
    """The images must be the same on both sides, each with at least one reference."""
    if not predictions:
        raise ValueError("no predictions to score")
    no_refs = [k for k in predictions if k not in references]
    no_pred = [k for k in references if k not in predictions]
    if no_refs or no_pred:
        problems = []
        if no_refs:
            problems.append(f"{len(no_refs)} predicted images have no references: {_few(no_refs)}")
        if no_pred:
            problems.append(f"{len(no_pred)} images have no prediction: {_few(no_pred)}")
        raise ValueError("prediction and reference ids differ: " + "; ".join(problems))
    empty = [k for k in predictions if len(references[k]) == 0]
    if empty:
        raise ValueError(f"{len(empty)} images have an empty reference list: {_few(empty)}")


def prepare(
    references: Mapping[Any, Sequence[str]], predictions: Mapping[Any, str], tokenized: bool
) -> tuple[dict[Any, list[str]], dict[Any, str]]:
    check(references, predictions)
    if tokenized:
        return {k: list(references[k]) for k in predictions}, dict(predictions)
    refs = {k: [" ".join(tokenize(r)) for r in references[k]] for k in predictions}
    preds = {k: " ".join(tokenize(p)) for k, p in predictions.items()}
    return refs, preds
