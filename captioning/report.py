"""Results: terminal tables (rich), and multirun reports (``python -m captioning.report DIR``)."""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, ImageDraw, ImageFont
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


# ---------------------------------------------------------------------- multirun reports

CHART_METRIC = "test/CIDEr-D"
GROUNDING = ("grounding", "grounding_noun")
COST = ("params", "fit_time_s", "train/images_per_s")  # after the scores in a report's table


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder of a multirun: its overrides and final metrics."""
    jobs = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml"), key=_job_order):
        job = overrides_file.parent.parent
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        metrics_file = job / "final_metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        jobs.append((job.name, overrides, metrics))
    if not jobs:
        raise FileNotFoundError(f"{sweep_dir}: no job folders (*/.hydra/overrides.yaml)")
    shared = set.intersection(*(set(overrides) for _, overrides, _ in jobs))
    return [
        {"job": name, "overrides": " ".join(o for o in overrides if o not in shared) or "(same)",
         "all_overrides": " ".join(overrides), **metrics}
        for name, overrides, metrics in jobs
    ]  # fmt: skip


def _job_order(path: Path) -> tuple[int, str]:
    name = path.parent.parent.name
    return (int(name), name) if name.isdigit() else (1 << 30, name)


def write_report(sweep_dir: Path, metric: str = CHART_METRIC) -> dict[str, Path]:
    """``report.md``, ``report.csv`` and ``report.png`` (a bar chart of ``metric``) in the folder."""
    rows = collect_jobs(sweep_dir)
    keys = sorted({k for row in rows for k in row} - {"job", "overrides", "all_overrides"})
    headline = [k for k in keys if k.split("/")[-1] in HEADLINE or k.endswith(GROUNDING)]
    if any(k.startswith("test/") for k in headline):  # the table shows test scores, the CSV all
        headline = [k for k in headline if k.startswith("test/")]
    columns = ["job", "overrides", *(headline or keys), *(k for k in COST if k in keys)]
    paths = {kind: sweep_dir / f"report.{kind}" for kind in ("md", "csv", "png")}
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["job", "overrides", "all_overrides", *keys])
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    paths["md"].write_text(f"# {sweep_dir}\n\n" + "\n".join(lines) + "\n")
    bar_chart([(f"{r['job']}: {r['overrides']}", r.get(metric)) for r in rows], metric).save(
        paths["png"]
    )
    return paths


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"  # parameter counts
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def bar_chart(bars: Sequence[tuple[str, float | None]], title: str) -> Image.Image:
    """Horizontal bars, one per job, labelled with its overrides and value (PIL only)."""
    font = ImageFont.load_default()
    label_width, bar_width, row, top = 420, 360, 22, 30
    image = Image.new("RGB", (label_width + bar_width + 80, top + row * len(bars) + 10), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill="black", font=font)
    values = [v for _, v in bars if v is not None]
    scale = bar_width / max(max(values, default=1.0), 1e-9)
    for i, (label, value) in enumerate(bars):
        y = top + i * row
        draw.text((10, y + 4), label[:68], fill="black", font=font)
        if value is None:
            draw.text((label_width, y + 4), "no result", fill="grey", font=font)
            continue
        draw.rectangle(
            [label_width, y + 2, label_width + max(1, value * scale), y + row - 4], fill="#3b7dd8"
        )
        draw.text((label_width + value * scale + 6, y + 4), f"{value:.4f}", fill="black", font=font)
    return image


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m captioning.report",
        description="Turn a multirun folder into report.md, report.csv and report.png.",
    )
    parser.add_argument("sweep_dir", type=Path, help="e.g. outputs/train/multirun/<time>")
    parser.add_argument("--metric", default=CHART_METRIC, help="the metric of the bar chart")
    args = parser.parse_args(argv)
    paths = write_report(args.sweep_dir, args.metric)
    Console().print(paths["md"].read_text())
    Console().print(f"written: {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
