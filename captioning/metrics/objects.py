"""Object F1 on Shapes: the (colour, shape) pairs a caption names against those in the image."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from captioning.text import plural

NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def object_phrases(
    tokens: Sequence[str], colours: Iterable[str], shapes: Iterable[str]
) -> Iterator[tuple[int, str, str]]:
    """Each ``colour shape`` pair (singular or plural) as (index of the colour word, colour, shape)."""
    colours = set(colours)
    nouns = {form: shape for shape in shapes for form in (shape, plural(shape))}
    for i in range(len(tokens) - 1):
        if tokens[i] in colours and tokens[i + 1] in nouns:
            yield i, tokens[i], nouns[tokens[i + 1]]


def named_objects(
    tokens: Sequence[str], colours: Iterable[str], shapes: Iterable[str]
) -> Counter[tuple[str, str]]:
    """Count ``[number] [size] colour shape`` phrases ("two small red circles" -> 2 x red circle)."""
    found: Counter[tuple[str, str]] = Counter()
    for i, colour, shape in object_phrases(tokens, colours, shapes):
        count = 1
        for back in (1, 2):  # the number word may precede a size word
            if i - back >= 0 and tokens[i - back] in NUMBERS:
                count = NUMBERS[tokens[i - back]]
                break
        found[(colour, shape)] += count
    return found


def object_f1(
    predictions: Mapping[Any, str], objects: Mapping[Any, Sequence[Mapping[str, Any]]]
) -> dict[str, float]:
    """Micro-averaged precision, recall and F1 of named objects over the corpus."""
    colours = {o["colour"] for objs in objects.values() for o in objs}
    shapes = {o["shape"] for objs in objects.values() for o in objs}
    true_pos = predicted = actual = 0
    for key, caption in predictions.items():
        named = named_objects(caption.split(), colours, shapes)
        present = Counter((o["colour"], o["shape"]) for o in objects[key])
        true_pos += sum((named & present).values())
        predicted += sum(named.values())
        actual += sum(present.values())
    precision = true_pos / predicted if predicted else 0.0
    recall = true_pos / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"object_precision": precision, "object_recall": recall, "object_F1": f1}
