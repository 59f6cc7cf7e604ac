"""Run the benchmarks: ``python -m benchmarks`` prints a table and writes ``bench.output``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from benchmarks import CONFIG_DIR
from benchmarks.data import bench_feature_cache, bench_loader, bench_region_loader
from benchmarks.decoding import bench_beam_batched, bench_transformer_kv_cache
from benchmarks.meteor import bench_meteor
from benchmarks.metrics import bench_metrics
from benchmarks.throughput import bench_throughput
from benchmarks.training import bench_loop_overhead, bench_scst_reward

log = logging.getLogger(__name__)

BENCHMARKS: dict[str, Callable[[DictConfig, torch.device], dict[str, Any]]] = {
    "loop_overhead": bench_loop_overhead,
    "beam_batched": bench_beam_batched,
    "transformer_kv_cache": bench_transformer_kv_cache,
    "metrics": bench_metrics,
    "meteor": bench_meteor,
    "loader": bench_loader,
    "feature_cache": bench_feature_cache,
    "region_loader": bench_region_loader,
    "throughput": bench_throughput,
    "scst_reward": bench_scst_reward,
}


def run_benchmarks(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("bench.device=cuda but no CUDA device is visible; use bench.device=cpu")
    names = list(cfg.only) if cfg.get("only") else list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"bench.only: unknown {unknown}; choose from {list(BENCHMARKS)}")
    results = {}
    for name in names:
        log.info("benchmark %s on %s", name, device)
        results[name] = BENCHMARKS[name](cfg, device)
    results_meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "threads": torch.get_num_threads()}  # fmt: skip
    for result in results.values():
        result.update(results_meta)
    return results


def print_table(results: dict[str, dict[str, Any]]) -> None:
    table = Table(title="benchmarks (ratio = alternative time / ours; bigger is better)")
    for column in ("benchmark", "ratio", "details"):
        table.add_column(column)
    for name, result in results.items():
        details = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in result.items()
            if k not in ("ratio", "note", "device", "threads")
        )
        table.add_row(name, f"{result['ratio']:.2f}", details)
    Console().print(table)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    results = run_benchmarks(cfg.bench)
    Path(cfg.bench.output).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
