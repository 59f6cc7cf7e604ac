"""Results tables of run folders (``python -m captioning.report DIR ... --markdown/--csv/--into``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from captioning.report import collect_runs, main, replace_table, results_markdown

HEADER = (
    "| run | test/BLEU-4 | test/CIDEr-D | test/object_F1 | test/grounding | test/grounding_noun "
    "| params | fit time | command | machine | commit |"
)
S0 = (
    "| `outputs/s0` | 0.9911 | 5.0426 | 0.9834 | 0.9174 | 0.9130 | 1,012,330 | 377 s "
    "| `python -m captioning.train seed=0 run_name=s0` | `2-core AMD EPYC` | `add6d4a26f15` |"
)
S1 = "| `outputs/s1` | 1.0000 | 4.9770 | 1.0000 |  |  | 995,561 | 167 s | unknown | unknown | unknown |"


def write_run(folder: Path, overrides: list[str], metrics: dict, info: dict | None = None) -> Path:
    """A run folder as captioning.train leaves it: final metrics, Hydra's record, run.json."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "final_metrics.json").write_text(json.dumps(metrics))
    if info is not None:
        (folder / "run.json").write_text(json.dumps(info))
    return folder


def scores(bleu: float, cider: float, f1: float, **more: float) -> dict[str, float]:
    return {"test/BLEU-4": bleu, "test/CIDEr-D": cider, "test/object_F1": f1,
            "val/CIDEr-D": cider + 0.1, "train/loss": 0.1, **more}  # fmt: skip


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    """Two runs under outputs/: one with run.json and grounding, one with neither."""
    root = tmp_path / "outputs"
    write_run(
        root / "s0",
        ["seed=0", "run_name=s0"],
        {**scores(0.99106, 5.042639, 0.98343, **{"test/grounding": 0.91739}),
         "test/grounding_noun": 0.913, "params": 1012330.0, "fit_time_s": 377.01},
        {"command": "python -m captioning.train seed=0 run_name=s0", "machine": "2-core AMD EPYC",
         "commit": "add6d4a26f15", "torch": "2.14.1", "python": "3.11.7"},
    )  # fmt: skip
    write_run(
        root / "s1",
        ["seed=1", "run_name=s1"],
        {**scores(1.0, 4.977, 1.0), "params": 995561.0, "fit_time_s": 166.6},
    )
    return root


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A multirun folder of three jobs, numbered 0, 2 and 10."""
    root = tmp_path / "multirun" / "grid"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    info = {"command": "python -m captioning.train -m attention=additive,dot|scaled_dot",
            "machine": "16-core AMD EPYC 9654, 1x NVIDIA H200", "commit": "0123abcd+dirty"}  # fmt: skip
    for job, attention in (("10", "scaled_dot"), ("2", "dot"), ("0", "additive")):
        write_run(root / job, [f"attention={attention}"], scores(0.5, 1.5, 0.25), info)
    return root


def test_one_row_per_run_with_its_provenance(outputs: Path) -> None:
    assert results_markdown(collect_runs([outputs])).splitlines() == [
        HEADER,
        "|---|---|---|---|---|---|---|---|---|---|---|",
        S0,
        S1,
    ]


def test_multirun_jobs_in_numeric_order_and_pipes_escaped(sweep: Path) -> None:
    lines = results_markdown(collect_runs([sweep])).splitlines()
    assert (
        lines[0]
        == "| run | test/BLEU-4 | test/CIDEr-D | test/object_F1 | command | machine | commit |"
    )
    command = r"`python -m captioning.train -m attention=additive,dot\|scaled_dot`"
    machine = "`16-core AMD EPYC 9654, 1x NVIDIA H200`"
    assert lines[2:] == [
        f"| `grid/{job}` | 0.5000 | 1.5000 | 0.2500 | {command} | {machine} | `0123abcd+dirty` |"
        for job in ("0", "2", "10")
    ]


def test_a_run_folder_given_itself_and_several_folders(outputs: Path, sweep: Path) -> None:
    rows = collect_runs([outputs / "s1", sweep, outputs / "s0"])
    assert [row["run"] for row in rows] == ["s1", "grid/0", "grid/2", "grid/10", "s0"]


def test_a_folder_without_runs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no run folders"):
        collect_runs([tmp_path])


def test_command_line_writes_markdown_and_csv(outputs: Path, tmp_path: Path) -> None:
    markdown, table = tmp_path / "out" / "results.md", tmp_path / "out" / "results.csv"
    main([str(outputs), "--markdown", str(markdown), "--csv", str(table)])
    assert markdown.read_text().splitlines()[2:] == [S0, S1]
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "run", "test/BLEU-4", "test/CIDEr-D", "test/object_F1", "test/grounding",
        "test/grounding_noun", "params", "fit_time_s", "command", "machine", "commit", "torch",
        "python",
    ]  # fmt: skip
    assert (rows[0]["test/CIDEr-D"], rows[0]["torch"], rows[0]["python"]) == (
        "5.042639",
        "2.14.1",
        "3.11.7",
    )
    assert (rows[1]["test/grounding"], rows[1]["commit"], rows[1]["torch"]) == (
        "",
        "unknown",
        "unknown",
    )


def test_into_replaces_only_the_table_slot(outputs: Path, tmp_path: Path) -> None:
    document = tmp_path / "README.md"
    before = "# title\n\nThe slot is `<!-- results:begin -->` ... `<!-- results:end -->`.\n\n"
    document.write_text(before + "<!-- results:begin -->\n<!-- results:end -->\n\ntext after\n")
    for _ in range(2):  # the second run replaces the table the first one wrote
        main([str(outputs), "--into", str(document)])
        assert document.read_text() == (
            before
            + f"<!-- results:begin made by: python -m captioning.report {outputs} --into {document} -->\n"
            f"{HEADER}\n|---|---|---|---|---|---|---|---|---|---|---|\n{S0}\n{S1}\n"
            "<!-- results:end -->\n\ntext after\n"
        )
    without_slot = tmp_path / "notes.md"
    without_slot.write_text("no slot here, only `<!-- results:begin -->` in a sentence\n")
    with pytest.raises(ValueError, match="no table slot"):
        replace_table(without_slot, "| a |\n", "cmd")
    assert without_slot.read_text() == "no slot here, only `<!-- results:begin -->` in a sentence\n"


def test_without_table_options_the_multirun_report_is_written(sweep: Path) -> None:
    main([str(sweep)])
    assert "| 10 | attention=scaled_dot |" in (sweep / "report.md").read_text()
    assert (sweep / "report.png").is_file() and (sweep / "report.csv").is_file()
    with pytest.raises(SystemExit):
        main([str(sweep), str(sweep)])  # several folders need --markdown/--csv/--into
