"""The benchmarks' one timing helper."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from torch.utils import benchmark


def seconds_per_call(
    fn: Callable[[], Any], repeats: int = 1, number: int = 1, warmup: int = 1
) -> float:
    """Seconds per call of ``fn``: the median over ``repeats`` blocks of ``number`` calls, each
    block's time divided by ``number``, after ``warmup`` untimed calls.

    The clock is ``torch.utils.benchmark.timer``, which first waits for the accelerator, so
    queued GPU work counts where it was issued. ``benchmark.Timer`` itself does not fit: it
    runs every block at least twice more as its own warm-up, and our calls (a training run,
    an epoch, an SCST step on the next batch) are too long or not repeatable.
    """
    for _ in range(warmup):
        fn()
    blocks = []
    for _ in range(repeats):
        start = benchmark.timer()
        for _ in range(number):
            fn()
        blocks.append((benchmark.timer() - start) / number)
    return statistics.median(blocks)
