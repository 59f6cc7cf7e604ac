"""Results: terminal tables (rich), multirun reports and results tables of run folders.

``python -m captioning.report DIR`` turns a multirun folder into report.md/.csv/.png;
``python -m captioning.report DIR [DIR ...] --markdown OUT.md [--csv OUT.csv] [--into FILE]``
writes one row per run folder found under the folders, with the command, machine and commit
each run recorded in its ``run.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from captioning.files import write_atomic
from captioning.provenance import RUN_FILE

HEADLINE = (
    "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE", "object_F1"
)  # fmt: skip


def print_results(
    scores: Mapping[str, float],
    predictions: Mapping[int, str],
    image_ids: Sequence[str],
    references: Mapping[int, Sequence[str]],
    samples: int = 5,
    title: str = "metrics",
) -> None:
    """A table of scores (the headline ones first, up to three metric-value pairs a row, as
    many as an 80-column terminal shows whole), then sample captions beside one of their
    references."""
    console = Console()
    table = Table(title=title)
    keys = [k for k in HEADLINE if k in scores] + sorted(set(scores) - set(HEADLINE))
    widest = max((len(k) for k in keys), default=6)
    pairs = max(1, min(3, len(keys), 78 // (widest + 13)))  # a pair takes the name + ~13
    for _ in range(pairs):
        table.add_column("metric", min_width=widest)
        table.add_column("value", justify="right")
    for start in range(0, len(keys), pairs):
        row = [cell for k in keys[start : start + pairs] for cell in (k, f"{scores[k]:.4f}")]
        table.add_row(*row, *[""] * (2 * pairs - len(row)))
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


METRICS_FILE = "final_metrics.json"  # every final val/ and test/ value, written by captioning.train


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder of a multirun: its overrides and final metrics."""
    jobs = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml"), key=_job_order):
        job = overrides_file.parent.parent
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        metrics_file = job / METRICS_FILE
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
    figure = bar_chart([(f"{r['job']}: {r['overrides']}", r.get(metric)) for r in rows], metric)
    write_atomic(paths["png"], lambda out: figure.savefig(out, format="png", dpi=100))
    return paths


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"  # parameter counts
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def bar_chart(bars: Sequence[tuple[str, float | None]], title: str) -> Figure:
    """Horizontal bars, one per job, labelled with its overrides and value."""
    figure = Figure(figsize=(10, 1.2 + 0.32 * len(bars)), layout="constrained")
    axes = figure.add_subplot()
    rows = range(len(bars))
    axes.barh(rows, [value or 0.0 for _, value in bars], color="#3b7dd8")
    axes.set_yticks(rows, [label[:68] for label, _ in bars])
    axes.invert_yaxis()  # job 0 on top, as in the table
    for row, (_, value) in enumerate(bars):
        text = " no result" if value is None else f" {value:.4f}"
        axes.text(value or 0.0, row, text, va="center", color="grey" if value is None else "black")
    axes.set_title(title)
    axes.margins(x=0.12)
    return figure


# ---------------------------------------------------------------------- results tables

RUN_SCORES = ("test/BLEU-4", "test/CIDEr-D", "test/object_F1", "test/grounding",
              "test/grounding_noun")  # fmt: skip
PROVENANCE = ("command", "machine", "commit")  # from run.json; "unknown" without one
# The table slot of a document: everything between these two lines is replaced.
SLOT = re.compile(r"^<!-- results:begin.*?-->\n.*?^<!-- results:end -->$", re.M | re.S)


def find_runs(folder: Path) -> list[Path]:
    """``folder`` itself when it holds final_metrics.json, else every run folder below it."""
    if (folder / METRICS_FILE).is_file():
        return [folder]
    runs = sorted((p.parent for p in folder.rglob(METRICS_FILE)), key=_natural_order)
    if not runs:
        raise FileNotFoundError(f"{folder}: no run folders ({METRICS_FILE}) in it or below it")
    return runs


def _natural_order(path: Path) -> list[int | str]:
    """Digits compared as numbers (job 2 before job 10): split() puts them at odd places."""
    pieces = re.split(r"(\d+)", path.as_posix())
    return [int(piece) if i % 2 else piece for i, piece in enumerate(pieces)]


def collect_runs(folders: Sequence[Path]) -> list[dict[str, Any]]:
    """One row per run folder: its name, final metrics, and run.json's provenance."""
    rows = []
    for folder in folders:
        for run in find_runs(folder):
            relative = run.relative_to(folder)
            name = Path(folder.resolve().name, relative).as_posix()
            metrics = json.loads((run / METRICS_FILE).read_text())
            info_file = run / RUN_FILE
            info = json.loads(info_file.read_text()) if info_file.is_file() else {}
            provenance = {k: info.get(k) or "unknown" for k in (*PROVENANCE, "torch", "python")}
            rows.append({"run": name, **metrics, **provenance})
    return rows


def results_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """run, the test scores some run has, params and fit time if known, then provenance."""
    present = {k for row in rows for k, v in row.items() if v is not None}
    scores = [k for k in RUN_SCORES if k in present]
    cost = [k for k in ("params", "fit_time_s") if k in present]
    return ["run", *scores, *cost, *PROVENANCE]


def results_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table, one row per run (scores to 4 decimals, fit time in seconds)."""
    columns = results_columns(rows)
    headers = {"fit_time_s": "fit time"}
    lines = [
        "| " + " | ".join(headers.get(c, c) for c in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [_results_cell(column, row.get(column)) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _results_cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column == "fit_time_s":
        return f"{value:.0f} s"
    if column == "params":
        return f"{int(value):,}"
    if column in PROVENANCE or column == "run":
        text = str(value).replace("|", "\\|")
        return text if value == "unknown" else f"`{text}`"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_results_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """The table's columns (full precision) plus the torch and Python versions."""
    columns = [*results_columns(rows), "torch", "python"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def replace_table(document: Path, table: str, command: str) -> Path:
    """Put ``table`` in the results slot of ``document``, naming the command in its first line."""
    text = document.read_text(encoding="utf-8")
    slot = f"<!-- results:begin made by: {command} -->\n{table}<!-- results:end -->"
    text, found = SLOT.subn(lambda _: slot, text, count=1)
    if not found:
        raise ValueError(
            f"{document}: no table slot; add the lines '<!-- results:begin -->' and "
            "'<!-- results:end -->'"
        )
    return write_atomic(document, lambda out: out.write(text.encode("utf-8")))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m captioning.report",
        description="Turn a multirun folder into report.md, report.csv and report.png; with "
        "--markdown/--csv/--into, tabulate every run folder under the given folders.",
    )
    parser.add_argument(
        "folders", type=Path, nargs="+", help="a multirun folder (e.g. outputs/train/multirun/"
        "<time>); with --markdown/--csv/--into, run folders or folders holding them",
    )  # fmt: skip
    parser.add_argument("--metric", default=CHART_METRIC, help="the metric of the bar chart")
    parser.add_argument("--markdown", type=Path, help="write the results table here")
    parser.add_argument("--csv", type=Path, help="write the results table here as CSV")
    parser.add_argument("--into", type=Path, help="replace the results table slot of this file")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(soft_wrap=True)  # table rows stay whole lines
    if not (args.markdown or args.csv or args.into):
        if len(args.folders) != 1:
            parser.error("a multirun report takes one folder; --markdown/--csv for several")
        paths = write_report(args.folders[0], args.metric)
        console.print(paths["md"].read_text())
        console.print(f"written: {', '.join(str(p) for p in paths.values())}")
        return
    rows = collect_runs(args.folders)
    table = results_markdown(rows)
    written = []
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
        written.append(args.markdown)
    if args.csv:
        written.append(write_results_csv(rows, args.csv))
    if args.into:
        shown = [str(f) for f in args.folders]
        command = shlex.join(
            ["python", "-m", "captioning.report", *shown, "--into", str(args.into)]
        )
        written.append(replace_table(args.into, table, command))
    console.print(table, markup=False, highlight=False)
    console.print(f"written: {', '.join(str(p) for p in written)}")


if __name__ == "__main__":
    main()
