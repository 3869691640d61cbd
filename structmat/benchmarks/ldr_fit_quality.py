"""Toeplitz-like and LDR fits of a cached head: plain beside data-aware, the low rank they contain, CPU seconds.

On a feature cache with the backbone's dense head (``W``, ``b``), every family is fitted at every share twice: to
``W`` and to its outputs on the training rows of the project's seeded split (``inputs`` = their
:class:`~structmat.InputStatistics`). Each row gives the weight error, the output error on the training rows (the
data-aware fit's objective) and on the held-out rows, the held-out top-1 agreement with the dense head before any
fine-tuning, and the median one-thread CPU and wall seconds over ``repeats`` fits (CPU seconds stay meaningful on a
machine shared with other jobs; ``stats_seconds`` is the time to form ``C`` once). Beside each fit: the low-rank
member of the family at the same budget (rank ``⌊r/2⌋`` for ``toeplitz_like``, rank r for ``ldr``; the truncated
SVD for the plain fit, the whitened one for the data-aware fit) and its errors, which the fit must not exceed on its
objective. The CSV is rewritten after every cell and finished cells are skipped on a rerun.

Run it as ``python -m structmat.benchmarks.ldr_fit_quality CACHE -f toeplitz_like ldr -b 0.1 0.25 0.5 --repeats 3
-o DIR`` (``CACHE``: a feature cache directory such as the demo's ``lite0-mnist5k-96``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat.benchmarks.results import format_table, read_rows, write_rows
from structmat.benchmarks.timing import single_thread
from structmat.families import get_family
from structmat.metrics import output_error, relative_error

__all__ = ["run_ldr_fit_quality", "LDR_FIT_QUALITY_COLUMNS", "main"]

logger = logging.getLogger(__name__)

METHODS = ("plain", "data-aware")
LDR_FIT_QUALITY_COLUMNS = [
    "family", "share", "method", "rank", "nparams", "params_share", "relative_error", "fit_output_error",
    "output_error", "agreement", "cpu_seconds", "wall_seconds", "repeats", "stats_seconds", "reference_rank",
    "reference_relative_error", "reference_fit_output_error", "reference_output_error", "status", "message"]


def _reference(W, family: str, rank: int, stats):
    """The low-rank member the family contains at this budget (module docstring), as a LowRank, or None."""
    from structmat.approximators.lowrank import fit_lowrank

    m, n = W.shape
    k = rank // 2 if family == "toeplitz_like" else min(rank, m, n)
    if k < 1:
        return None, 0
    return fit_lowrank(W, k * (m + n), inputs=stats), k


def run_ldr_fit_quality(cache, families: Sequence[str] = ("toeplitz_like", "ldr"), shares: Sequence = (0.1, 0.25, 0.5),
                        *, test_share: float = 0.2, seed: int = 0, repeats: int = 1, csv_path=None,
                        resume: bool = True, progress: bool = False) -> list[dict]:
    """One row per (family, share, method) with the keys of ``LDR_FIT_QUALITY_COLUMNS`` (module docstring)."""
    from structmat.approximators.data_aware import OutputObjective
    from structmat.benchmarks.data_aware import head_and_statistics

    W, bias, train, test, stats, stats_seconds, _ = head_and_statistics(
        cache, families, shares, repeats=repeats, test_share=test_share, seed=seed)
    objective = OutputObjective(W, stats)
    test_rows = np.asarray(cache.features.take(np.sort(test)), dtype=np.float64)
    dense_top1 = (test_rows @ W.T + bias).argmax(axis=1)

    def measures(M):
        dense = M.to_dense()
        agreement = float(np.mean((test_rows @ dense.T + bias).argmax(axis=1) == dense_top1))
        return relative_error(W, M), objective.relative_error(dense), output_error(W, dense, test_rows), agreement

    rows = read_rows(csv_path) if (csv_path is not None and resume) else []
    done = {(r["family"], r["share"], r["method"]) for r in rows}
    cells = [(f, s, m) for f in families for s in shares for m in METHODS if (f, repr(s), m) not in done]
    with single_thread():
        for family, share, method in tqdm(cells, desc="toeplitz_like/ldr fits", disable=not progress):
            row = {"family": family, "share": repr(share), "method": method, "repeats": repeats,
                   "stats_seconds": stats_seconds}
            inputs = stats if method == "data-aware" else None
            cpu, wall, M = [], [], None
            try:
                for _ in range(repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    fitted = get_family(family).fit(W, share, inputs=inputs)
                    wall.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                    M = M or fitted
            except ValueError as exc:  # below the family's smallest member
                rows.append({**row, "status": "skipped", "message": str(exc)})
                continue
            fro, fit_output, held_out, agreement = measures(M)
            row.update(rank=M.rank, nparams=M.nparams, params_share=M.nparams / W.size, relative_error=fro,
                       fit_output_error=fit_output, output_error=held_out, agreement=agreement,
                       cpu_seconds=statistics.median(cpu), wall_seconds=statistics.median(wall), status="ok",
                       message="")
            reference, k = _reference(W, family, M.rank, inputs)
            if reference is not None:
                ref = measures(reference)
                row.update(reference_rank=k, reference_relative_error=ref[0], reference_fit_output_error=ref[1],
                           reference_output_error=ref[2])
            rows.append(row)
            logger.info("%s", row)
            if csv_path is not None:
                write_rows(csv_path, rows, LDR_FIT_QUALITY_COLUMNS)
    return rows


def main(argv=None) -> None:
    """``python -m structmat.benchmarks.ldr_fit_quality CACHE [-f F ...] [-b B ...] [--repeats R] [-o DIR]``."""
    from structmat.benchmarks.data_aware import plot_data_aware
    from structmat.cli._common import parse_budget
    from structmat.features import FeatureCache

    parser = argparse.ArgumentParser(prog="python -m structmat.benchmarks.ldr_fit_quality",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", help="feature cache directory with the backbone's dense head")
    parser.add_argument("--family", "-f", nargs="+", default=["toeplitz_like", "ldr"])
    parser.add_argument("--budget", "-b", nargs="+", type=parse_budget, default=[0.1, 0.25, 0.5])
    parser.add_argument("--repeats", type=int, default=1, help="fits per cell; times are medians (default 1)")
    parser.add_argument("--output-dir", "-o", default="ldr-fit-quality", help="directory for the CSV and PNG")
    parser.add_argument("--no-resume", action="store_true", help="start over instead of skipping finished cells")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    rows = run_ldr_fit_quality(FeatureCache(args.cache), args.family, args.budget, repeats=args.repeats,
                               csv_path=out / "ldr_fit_quality.csv", resume=not args.no_resume, progress=True)
    print(format_table(rows, ["family", "share", "method", "rank", "relative_error", "fit_output_error",
                              "output_error", "agreement", "cpu_seconds", "reference_fit_output_error"]))
    if any(r["status"] == "ok" for r in rows):
        plot_data_aware(rows, out / "ldr_fit_quality.png", title="Toeplitz-like and LDR: plain vs data-aware fits")
    print(f"wrote {out / 'ldr_fit_quality.csv'} and {out / 'ldr_fit_quality.png'}")


if __name__ == "__main__":
    main()
