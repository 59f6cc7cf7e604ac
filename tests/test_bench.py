"""The benchmark suite runs end to end at toy sizes and writes its ratios (not a timing test)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchmarks import CONFIG_DIR
from benchmarks import data as bench_data
from benchmarks.models import IMAGE, model_config, shapes_model
from benchmarks.run import BENCHMARKS, print_table, run_benchmarks
from benchmarks.timing import seconds_per_call
from tests.helpers import compose_config


def test_every_benchmark_reports_a_ratio(tmp_path: Path, capsys) -> None:
    cfg = compose_config(
        "bench",
        tmp_path,
        ["bench.repeats=1", "bench.loop_steps=2", "bench.batch_size=4", "bench.beam_batch=2",
         "bench.beam_size=2", "bench.beam_max_len=3", "bench.kv_steps=3", "bench.metrics_images=20", "bench.meteor_images=20",
         "bench.throughput_models=[show_attend_tell]", "bench.throughput_variants=[32-true]",
         "bench.throughput_batch=1", "bench.loader_images=16", "bench.scst_images=16", "bench.scst_steps=1", "bench.cache_images=8", "bench.cache_batch_size=4", "bench.region_images=16", "bench.region_dim=8",
         f"bench.output={tmp_path / 'bench.json'}"],
        config_dir=CONFIG_DIR,
    )  # fmt: skip
    results = run_benchmarks(cfg.bench)
    assert set(results) == set(BENCHMARKS)
    for name, result in results.items():
        if name == "meteor":  # one JVM start: the values are compared here too
            if shutil.which("java") is None:
                assert "java not on PATH" in result["note"]  # nothing to time against
                continue
            assert result["max_abs_diff"] < 1e-6 and result["ours_warm_s"] > 0
        assert result["ratio"] > 0, name
    print_table(results)
    assert "transformer_kv_cache" in capsys.readouterr().out
    json.dumps(results)  # bench.json must be plain JSON


def test_python_m_benchmarks_composes_its_models_inside_the_app(tmp_path: Path) -> None:
    """Inside the running app the search path is bench.yaml's: the models still compose."""
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "bench.only=[beam_batched]", "bench.repeats=1",
         "bench.beam_batch=2", "bench.beam_size=2", "bench.beam_max_len=3",
         f"bench.output={out}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(out.read_text())["beam_batched"]["ratio"] > 0


def test_models_come_from_the_config_tree() -> None:
    default = model_config()
    assert default["encoder"]["_target_"] == "captioning.models.SmallCNN"
    assert default["decoder"]["attention"]["_target_"] == "captioning.models.AdditiveAttention"
    assert "objective" not in default  # a training setting, not the Captioner's
    overridden = model_config("encoder=resnet50", "encoder.pretrained=false")
    assert overridden["encoder"]["depth"] == 50 and not overridden["encoder"]["pretrained"]


def test_one_timer_for_every_benchmark() -> None:
    calls = []
    seconds = seconds_per_call(lambda: calls.append(1), repeats=3, number=2, warmup=1)
    assert len(calls) == 1 + 3 * 2 and seconds >= 0
    assert seconds_per_call(lambda: calls.append(1), warmup=0) >= 0 and len(calls) == 8


def test_metrics_benchmark_reports_ratios() -> None:
    pytest.importorskip("pycocoevalcap.cider.cider")
    from benchmarks.metrics import compare_metrics

    result = compare_metrics(n_images=60, n_refs=2, seed=1)
    assert {"ratio", "ours_s", "pycocoevalcap_s", "bleu_ratio", "n_images", "n_refs"} <= set(result)
    assert result["n_images"] == 60 and result["ratio"] > 0
    assert result["max_abs_diff"] < 1e-9


def test_throughput_variants_and_flops() -> None:
    from benchmarks.throughput import model_flops, parse_variant, peak_flops, variants

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
    flops = model_flops(model_config(), vocab=41, length=18)
    # backward costs about twice the forward: a training step is ~3x the forward pass
    assert 2.5 < flops["train_flops_per_image"] / flops["forward_flops"] < 3.5


def test_recorded_steps_are_the_searchs_decoder_calls() -> None:
    from benchmarks.decoding import recorded_steps
    from captioning.decoding import beam_search

    torch.manual_seed(0)
    model = shapes_model().eval()
    with torch.no_grad():
        model.decoder.classifier.bias[2] = -1e4  # no hypothesis ends: every step runs
        regions = model.encode(torch.rand(2, 3, IMAGE, IMAGE))
        calls = recorded_steps(
            model.decoder, lambda: beam_search(model.decoder, regions, 1, 2, 0, 3, max_len=4)
        )
        assert "step" not in vars(model.decoder)  # the method is back
        # the first step runs once per image, then k = 3 rows per image
        assert [tokens.shape[0] for tokens, _ in calls] == [2, 6, 6, 6]
        assert calls[0][0].tolist() == [1, 1]  # <bos>
        replayed, _, _ = model.decoder.step(*calls[1])
        first = model.decoder.step(calls[0][0], model.decoder.init_state(regions))[0]
        # the second step continues the first step's 3 best words of each image
        first[:, [0, 1]] = float("-inf")  # <pad> and <bos> are never words
        top = first.topk(3, dim=-1).indices
        for row, token in enumerate(calls[1][0].tolist()):
            assert token in top[row // 3].tolist()
        assert replayed.shape == (6, model.decoder.vocab_size)


def test_bench_removes_only_the_cache_folder_it_made(tmp_path: Path, monkeypatch) -> None:
    users = tmp_path / ".cache" / "bench_features"
    users.mkdir(parents=True)
    (users / "keep.txt").write_text("mine")
    seen = []

    def fake(cfg, device, root, cache_dir):
        seen.append((cache_dir, sorted(cache_dir.iterdir())))
        return {}

    monkeypatch.setattr(bench_data, "bench_shapes", lambda cfg, n: tmp_path / "shapes")
    monkeypatch.setattr(bench_data, "_bench_feature_cache", fake)
    cfg = SimpleNamespace(data_dir=str(tmp_path), cache_images=8)
    bench_data.bench_feature_cache(cfg, torch.device("cpu"))
    (cache_dir, content), *_ = seen
    assert cache_dir.parent == tmp_path / ".cache" and content == []  # fresh: made by the bench
    assert not cache_dir.exists()
    assert (users / "keep.txt").read_text() == "mine"
