"""Speed of our METEOR against pycocoevalcap's Java scorer on generated captions (``dev`` extra).

The captions come from a small grammar whose words have inflections, WordNet synonyms and
paraphrase-table phrases, so that every matcher and the beam search have work to do.
"""

from __future__ import annotations

import random
import shutil
import time
from typing import Any

import torch
from omegaconf import DictConfig

SUBJECTS = [
    "man", "men", "woman", "women", "person", "people", "boy", "boys", "girl", "girls",
    "child", "children", "kid", "kids", "dog", "dogs", "puppy", "cat", "cats", "horse",
    "player", "players", "guy", "lady", "couple", "group of people", "young man",
    "little girl", "small boy", "baseball player", "skateboarder", "surfer",
]  # fmt: skip
ADJECTIVES = [
    "red", "blue", "black", "white", "brown", "large", "big", "small", "little", "young",
    "old", "happy", "tall", "wooden", "green", "yellow", "dark", "bright", "several",
]  # fmt: skip
VERBS = [
    "is sitting on", "sits on", "sitting on", "is standing in", "stands in", "standing in",
    "is walking down", "walks down", "walking along", "is running through", "runs across",
    "running on", "is riding", "rides", "riding", "is holding", "holds", "holding",
    "is playing with", "plays with", "playing in", "jumps over", "jumping off", "looks at",
    "looking at", "is eating", "eats", "carrying", "carries", "throws", "throwing",
    "is laying on", "lies on", "waits for", "is waiting at",
]  # fmt: skip
OBJECTS = [
    "bench", "benches", "street", "road", "sidewalk", "field", "grass", "beach", "water",
    "wave", "waves", "bike", "bicycle", "skateboard", "ball", "frisbee", "table", "couch",
    "sofa", "car", "automobile", "truck", "bus", "train", "building", "park", "snow",
    "hill", "kitchen", "pizza", "sandwich", "plate", "phone", "umbrella", "kite", "river",
    "city street", "parking lot", "tennis court", "dining table", "front of a building",
]  # fmt: skip
PLACES = [
    "in the park", "on the beach", "next to a building", "near the water", "in a field",
    "on a sunny day", "at night", "in the snow", "on the side of the road", "in front of a house",
    "with a crowd of people", "in the middle of the street", "at the same time", "as well",
]  # fmt: skip
DETERMINERS = ["a", "a", "the", "the", "an", "two", "three", "some", "one"]


def _phrase(rng: random.Random, nouns: list[str]) -> str:
    words = [rng.choice(DETERMINERS)]
    words += rng.sample(ADJECTIVES, k=rng.choice((0, 0, 1, 1, 2)))
    words.append(rng.choice(nouns))
    return " ".join(words)


def caption(rng: random.Random) -> str:
    """One caption-like sentence (5..25 words)."""
    parts = [_phrase(rng, SUBJECTS), rng.choice(VERBS), _phrase(rng, OBJECTS)]
    if rng.random() < 0.6:
        parts.append(rng.choice(PLACES))
    if rng.random() < 0.25:
        parts += ["and", _phrase(rng, SUBJECTS), rng.choice(VERBS), _phrase(rng, OBJECTS)]
    return " ".join(parts)


def caption_corpus(
    n_images: int, n_refs: int, seed: int = 0
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``n_images`` x ``n_refs`` references and one prediction each, seeded."""
    rng = random.Random(seed)
    references = {f"img{i}": [caption(rng) for _ in range(n_refs)] for i in range(n_images)}
    predictions = {key: caption(rng) for key in references}
    return references, predictions


def java_meteor(
    references: dict[str, list[str]], predictions: dict[str, str]
) -> tuple[float, list[float]]:
    """pycocoevalcap's ``Meteor`` (starts a JVM, loads its tables, scores, stops it)."""
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        return scorer.compute_score(references, {k: [p] for k, p in predictions.items()})
    finally:
        del scorer


def compare_meteor(n_images: int = 5000, n_refs: int = 5, seed: int = 0) -> dict[str, Any]:
    """Our METEOR against the Java scorer, each timed once on the same corpus.

    ``ours_s``: this process's first call (the table cache on disk already built, its load
    included as ``load_s``); ``ours_warm_s``: a second call on the same corpus (memoised
    sentences and segments); ``java_s``: pycocoevalcap's ``Meteor`` including JVM start and
    its table load. ``ratio`` is ``java_s / ours_s``.
    """
    from captioning.metrics.meteor import meteor_score
    from captioning.metrics.meteor.resources import tables

    references, predictions = caption_corpus(n_images, n_refs, seed)
    start = time.perf_counter()
    tables()
    load = time.perf_counter() - start
    start = time.perf_counter()
    ours, ours_segments = meteor_score(references, predictions, tokenized=True)
    ours_s = load + time.perf_counter() - start
    start = time.perf_counter()
    meteor_score(references, predictions, tokenized=True)
    ours_warm_s = time.perf_counter() - start
    result: dict[str, Any] = {"ours_s": ours_s, "load_s": load, "ours_warm_s": ours_warm_s,
                              "n_images": n_images, "n_refs": n_refs, "meteor": ours}  # fmt: skip
    if shutil.which("java") is None:
        return {**result, "ratio": float("nan"), "note": "java not on PATH: no Java timing"}
    start = time.perf_counter()
    java, java_segments = java_meteor(references, predictions)
    java_s = time.perf_counter() - start
    gaps = [abs(a - b) for a, b in zip(ours_segments.values(), java_segments, strict=True)]
    return {
        **result,
        "ratio": java_s / ours_s,
        "java_s": java_s,
        "corpus_abs_diff": abs(ours - java),
        "max_abs_diff": max([*gaps, abs(ours - java)]),
    }


def bench_meteor(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Our METEOR against pycocoevalcap's Java one on ``bench.meteor_images`` x 5 captions."""
    return compare_meteor(n_images=int(cfg.meteor_images), n_refs=5)
