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


def time_repeats(fn, *, repeats: int = 7, warmup: int = 1, min_seconds: float = 0.0,
                 clock=time.perf_counter) -> TimingResult:
    """Call ``fn`` ``warmup`` times, then time ``repeats`` calls (more while under ``min_seconds`` in total).

    ``clock`` is wall time by default; ``time.thread_time`` measures the CPU time of the calling thread, which
    equals the wall time of one-thread work on an idle core and leaves out the time other processes held the core
    (the right clock on a shared machine, as long as the work runs on this thread).
    """
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start) < min_seconds:
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return TimingResult(statistics.median(times), min(times), max(times), len(times))
