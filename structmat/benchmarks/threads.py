"""Fit time against the number of BLAS/OpenMP/torch threads, on a quiet machine and with busy neighbours.

This is the measurement behind the default of one thread per fit (:mod:`structmat.threads`). For every matrix and
family, each thread count is timed ``repeats`` times, the counts interleaved (1, 2, 1, 2, ...) so that a change in
the machine's load hits them alike, first with nothing else started and then with ``busy`` extra processes that
each keep a core busy (a stand-in for the other jobs of a shared machine). Wall-clock and CPU seconds are
recorded; the rows also carry the load average before each block and whether the results of every thread count
are identical (they need not be: BLAS reductions split over more threads round differently).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Mapping, Sequence

import numpy as np

from structmat._validation import check_weight
from structmat.benchmarks.results import write_rows
from structmat.families import get_family
from structmat.threads import check_threads

__all__ = ["run_thread_benchmark", "plot_thread_benchmark", "THREAD_COLUMNS"]

THREAD_COLUMNS = ["matrix", "m", "n", "family", "budget", "busy", "threads", "repeats", "median_seconds",
                  "min_seconds", "median_cpu_seconds", "ratio_to_one_thread", "same_bytes_as_one_thread",
                  "load_average"]


def _busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def _stop(processes) -> None:
    for p in processes:
        p.kill()
    for p in processes:
        p.wait()


def _array_bytes(M) -> bytes:
    return b"".join(np.ascontiguousarray(a).tobytes() for _, a in sorted(M._arrays().items()))


def run_thread_benchmark(matrices: Mapping[str, np.ndarray], families: Sequence[str], budget, *,
                         threads: Sequence[int] = (1, 2), busy: Sequence[int] = (0, 2), repeats: int = 5,
                         csv_path=None) -> list[dict]:
    """Time ``structmat.approximate(W, family, budget, threads=t)`` for every ``t`` in ``threads``, with ``b``
    busy-looping processes alongside for every ``b`` in ``busy``; one row per (matrix, family, busy, threads)."""
    threads = [check_threads(t) for t in threads]
    if 1 not in threads:
        threads = [1, *threads]
    if any(int(b) < 0 for b in busy) or repeats < 1:
        raise ValueError(f"busy counts must be >= 0 and repeats >= 1; got busy={list(busy)}, repeats={repeats}")
    matrices = {name: check_weight(W, name=f"matrix {name!r}") for name, W in matrices.items()}
    for family in families:
        get_family(family)
    rows = []
    for name, W in matrices.items():
        for family in families:
            fit = get_family(family).fit
            fit(W, budget)  # warm-up: imports, Numba compilation
            for extra in busy:
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                neighbours = _busy_processes(int(extra))
                try:
                    wall = {t: [] for t in threads}
                    cpu = {t: [] for t in threads}
                    results = {}
                    for _ in range(repeats):
                        for t in threads:
                            w0, c0 = time.perf_counter(), time.process_time()
                            M = fit(W, budget, threads=t)
                            wall[t].append(time.perf_counter() - w0)
                            cpu[t].append(time.process_time() - c0)
                            results[t] = _array_bytes(M)
                finally:
                    _stop(neighbours)
                one = statistics.median(wall[1])
                for t in threads:
                    rows.append({"matrix": name, "m": W.shape[0], "n": W.shape[1], "family": family,
                                 "budget": budget, "busy": int(extra), "threads": t, "repeats": repeats,
                                 "median_seconds": statistics.median(wall[t]), "min_seconds": min(wall[t]),
                                 "median_cpu_seconds": statistics.median(cpu[t]),
                                 "ratio_to_one_thread": statistics.median(wall[t]) / one,
                                 "same_bytes_as_one_thread": results[t] == results[1], "load_average": load})
                if csv_path is not None:
                    write_rows(csv_path, rows, THREAD_COLUMNS)
    return rows


def plot_thread_benchmark(rows: list[dict], path) -> None:
    """Median fit seconds per family, one bar per thread count, one panel per number of busy neighbours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    busy = sorted({int(r["busy"]) for r in rows})
    labels = list(dict.fromkeys(f"{r['family']}\n{r['matrix']}" for r in rows))
    counts = sorted({int(r["threads"]) for r in rows})
    fig, axes = plt.subplots(1, len(busy), figsize=(max(5.0, 1.3 * len(labels)) * len(busy), 4.5), squeeze=False)
    width = 0.8 / len(counts)
    for col, b in enumerate(busy):
        ax = axes[0, col]
        for k, t in enumerate(counts):
            heights = [next((float(r["median_seconds"]) for r in rows if int(r["busy"]) == b and
                             int(r["threads"]) == t and f"{r['family']}\n{r['matrix']}" == label), np.nan)
                       for label in labels]
            ax.bar(np.arange(len(labels)) + k * width, heights, width, label=f"{t} thread{'s' * (t > 1)}")
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("fit seconds (median, wall clock)")
        ax.set_title(f"{b} busy process{'es' * (b != 1)} started alongside", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
