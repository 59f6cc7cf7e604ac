"""Terminal tables of results (rich)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table

HEADLINE = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D", "object_F1")


def print_results(
    scores: Mapping[str, float],
    predictions: Mapping[int, str],
    image_ids: Sequence[str],
    references: Mapping[int, Sequence[str]],
    samples: int = 5,
    title: str = "metrics",
) -> None:
    """A table of scores, then sample captions beside one of their references."""
    console = Console()
    table = Table(title=title)
    keys = [k for k in HEADLINE if k in scores] + sorted(set(scores) - set(HEADLINE))
    for key in keys:
        table.add_column(key, justify="right")
    table.add_row(*(f"{scores[k]:.4f}" for k in keys))
    console.print(table)
    if samples <= 0:
        return
    examples = Table(title="sample captions")
    examples.add_column("image")
    examples.add_column("generated")
    examples.add_column("a reference")
    for index in sorted(predictions)[:samples]:
        examples.add_row(image_ids[index], predictions[index], references[index][0])
    console.print(examples)
