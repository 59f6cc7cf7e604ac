"""English word forms that the Shapes captions use and the object metrics read back."""

from __future__ import annotations

PLURALS = {"cross": "crosses"}


def plural(noun: str) -> str:
    """The plural a caption uses for a shape word ("circles", "crosses")."""
    return PLURALS.get(noun, noun + "s")
