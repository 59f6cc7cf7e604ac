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
         "bench.throughput_models=[show_attend_tell]", "bench.throughput_variants=[32-true]",
         "bench.throughput_batch=1", "bench.loader_images=16", "bench.scst_images=16", "bench.scst_steps=1", "bench.cache_images=8", "bench.cache_batch_size=4",
         f"bench.output={tmp_path / 'bench.json'}"],
    )  # fmt: skip
    results = run_benchmarks(cfg.bench)
    assert set(results) == set(BENCHMARKS)
    for name, result in results.items():
        assert result["ratio"] > 0, name
    print_table(results)
    assert "transformer_kv_cache" in capsys.readouterr().out
    json.dumps(results)  # bench.json must be plain JSON


def test_throughput_variants_and_flops() -> None:
    import pytest
    import torch

    from captioning.bench_throughput import model_flops, parse_variant, peak_flops, variants

    assert parse_variant("bf16-mixed+compile+channels_last") == (
        "bf16-mixed",
        {"compile", "channels_last"},
    )
    with pytest.raises(ValueError, match=r"'fp8\+compile' is not <precision>"):
        parse_variant("fp8+compile")
    assert variants("auto", torch.device("cpu")) == [
        "32-true",
        "bf16-mixed",
        "32-true+channels_last",
    ]
    assert len(variants("all", torch.device("cpu"))) == 8
    assert peak_flops(torch.device("cpu"), None) is None
    assert peak_flops(torch.device("cpu"), 100) == 100e12
    from captioning.bench import MODEL_CFG

    flops = model_flops(MODEL_CFG, vocab=41, length=18)
    # backward costs about twice the forward: a training step is ~3x the forward pass
    assert 2.5 < flops["train_flops_per_image"] / flops["forward_flops"] < 3.5
