"""Randomized against exact truncated SVD: error ratio and speed-up on one thread.

The randomized SVD (Halko, Martinsson & Tropp 2011) should stay within 1% of the Eckart–Young optimum while
running several times faster than LAPACK's full SVD on large matrices at small ranks.
"""

from __future__ import annotations

import time

import numpy as np

from structmat._validation import check_weight
from structmat.approximators.lowrank import truncated_svd
from structmat.benchmarks.results import write_rows
from structmat.benchmarks.timing import single_thread

__all__ = ["run_rsvd_benchmark", "RSVD_COLUMNS"]

RSVD_COLUMNS = [
    "matrix", "m", "n", "rank", "svd_seconds", "randomized_seconds", "speedup", "optimal_error",
    "randomized_error", "error_ratio",
]


def run_rsvd_benchmark(matrices, ranks, *, seed: int = 0, csv_path=None) -> list[dict]:
    """For each matrix: one full SVD (timed once; it serves every rank), and a randomized SVD per rank.

    ``optimal_error`` is ``sqrt(sum of discarded σ²) / ||W||_F``; ``error_ratio`` is the randomized error over it.
    """
    rows = []
    with single_thread():
        for name, W in matrices.items():
            W = check_weight(W, name=f"matrix {name!r}")
            norm = np.linalg.norm(W)
            t0 = time.perf_counter()
            _, s, _ = truncated_svd(W, min(W.shape), method="svd")
            svd_seconds = time.perf_counter() - t0
            for rank in ranks:
                t0 = time.perf_counter()
                U, sr, Vt = truncated_svd(W, rank, method="randomized", seed=seed)
                randomized_seconds = time.perf_counter() - t0
                optimal = np.sqrt(np.sum(s[rank:] ** 2)) / norm
                randomized = np.linalg.norm(W - (U * sr) @ Vt) / norm
                rows.append({"matrix": name, "m": W.shape[0], "n": W.shape[1], "rank": rank,
                             "svd_seconds": svd_seconds, "randomized_seconds": randomized_seconds,
                             "speedup": svd_seconds / randomized_seconds, "optimal_error": optimal,
                             "randomized_error": randomized, "error_ratio": randomized / optimal})
                if csv_path is not None:
                    write_rows(csv_path, rows, RSVD_COLUMNS)
    return rows
