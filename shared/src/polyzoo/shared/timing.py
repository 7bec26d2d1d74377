"""Timing helpers for benchmarks and reproduction checks: contenders are timed interleaved in one process
(A, B, C, A, B, C, ...) so that machine noise hits all of them alike; medians are reported."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

__all__ = ["time_interleaved"]


def time_interleaved(
    contenders: Mapping[str, Callable[[], object]], repeats: int = 10, warmup: int = 2
) -> dict[str, float]:
    """Median wall-clock seconds of each callable, over ``repeats`` interleaved rounds after ``warmup``."""
    if repeats < 1:
        raise ValueError(f"time_interleaved: repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}
