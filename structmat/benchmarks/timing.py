"""Timing helpers shared by the benchmarks: one thread, warm-up, median of repeats."""

from __future__ import annotations

import contextlib
import statistics
import sys
import time

__all__ = ["single_thread", "time_repeats", "TimingResult"]

from dataclasses import dataclass


@dataclass(frozen=True)
class TimingResult:
    """Seconds per call over ``repeats`` timed calls after warm-up."""

    median: float
    minimum: float
    maximum: float
    repeats: int


@contextlib.contextmanager
def single_thread():
    """Limit BLAS/OpenMP pools (threadpoolctl) and torch, if imported, to one thread, as on one core."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    previous = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=1):
        if torch is not None:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(previous)


def time_repeats(fn, *, repeats: int = 7, warmup: int = 1, min_seconds: float = 0.0) -> TimingResult:
    """Call ``fn`` ``warmup`` times, then time ``repeats`` calls (more while under ``min_seconds`` in total)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start) < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return TimingResult(statistics.median(times), min(times), max(times), len(times))
