"""The benchmark suite runs end to end at toy sizes and writes its ratios (not a timing test)."""

import json
from pathlib import Path

from captioning.bench import BENCHMARKS, print_table, run_benchmarks
from tests.conftest import compose_config


def test_every_benchmark_reports_a_ratio(tmp_path: Path, capsys) -> None:
    cfg = compose_config(
        "bench",
        tmp_path,
        ["bench.repeats=1", "bench.loop_steps=2", "bench.batch_size=4", "bench.beam_batch=2",
         "bench.beam_size=2", "bench.beam_max_len=3", "bench.kv_steps=3", "bench.metrics_images=20",
         "bench.loader_images=16", "bench.cache_images=8", "bench.cache_batch_size=4",
         f"bench.output={tmp_path / 'bench.json'}"],
    )  # fmt: skip
    results = run_benchmarks(cfg.bench)
    assert set(results) == set(BENCHMARKS)
    for name, result in results.items():
        assert result["ratio"] > 0, name
    print_table(results)
    assert "transformer_kv_cache" in capsys.readouterr().out
    json.dumps(results)  # bench.json must be plain JSON
