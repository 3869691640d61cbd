"""structmat's sparse-product fit side by side with pyfaust's hierarchical factorization (the peer library's route).

pyfaust (FAµST, PyPI ``pyfaust``, the ``faust`` extra of structmat) is optional and only needed here. Its cells are
run as the peer library ran them: ``pyfaust.fact.hierarchical`` with two normalised ``sp`` constraints, factor shapes
``(m, d), (d, n)`` with ``d = max(m, n)``, the default stopping criterion (500 iterations per PALM4MSA run) unless
``faust_iterations`` says otherwise, and the last factor's share of the non-zeros taken from ``splits``. Every cell
is one row of a CSV that is rewritten atomically after the cell, so a long run resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat._validation import check_weight, resolve_budget
from structmat.benchmarks.results import read_rows, write_rows
from structmat.benchmarks.timing import single_thread

__all__ = ["run_pyfaust_comparison", "summarize_pyfaust_comparison", "PYFAUST_COLUMNS", "DEFAULT_VARIANTS"]

logger = logging.getLogger(__name__)

#: structmat's rows: the default fit, and the settings the default uses for small matrices (slow budget ramp, tight
#: stopping rule) forced on every size: the same fit up to 256×256, several times slower and better on large ones.
DEFAULT_VARIANTS = {"structmat": {}, "structmat-thorough": {"ramp_rate": 0.004, "tol": 1e-4, "max_iter": 400}}

PYFAUST_COLUMNS = [
    "matrix", "m", "n", "budget", "budget_params", "method", "split", "iterations", "nparams", "relative_error",
    "fit_seconds", "cpu_seconds", "status", "message",
]


def _fit_pyfaust(W: np.ndarray, limit: int, split: float, iterations: int):
    """pyfaust's hierarchical factorization into two factors; returns (dense product, nnz)."""
    from pyfaust.fact import hierarchical
    from pyfaust.factparams import ParamsHierarchical, StoppingCriterion
    from pyfaust.proj import sp

    m, n = W.shape
    d = max(m, n)
    k_last = int(split * limit)
    k_first = limit - k_last
    params = ParamsHierarchical([sp((m, d), k_first, normalized=True)], [sp((d, n), k_last, normalized=True)],
                                StoppingCriterion(num_its=iterations), StoppingCriterion(num_its=iterations))
    F = hierarchical(W, params, backend=2016)
    return np.asarray(F.toarray(), dtype=np.float64), int(F.nnz_sum())


def run_pyfaust_comparison(matrices: Mapping[str, np.ndarray], budgets: Sequence, *, splits=(0.3, 0.5, 0.7),
                           faust_iterations=500, structmat_variants=None, csv_path=None, resume: bool = True,
                           progress: bool = False) -> list[dict]:
    """Fit every matrix at every budget with ``fit_sparse_product`` and with pyfaust, one thread each.

    Parameters
    ----------
    matrices : mapping of name to array of shape (m, n)
    budgets : sequence of int or float
        Non-zero budgets (shares of ``m · n`` for floats).
    splits : sequence of float
        Shares of the non-zeros given to pyfaust's last factor (one pyfaust run each).
    faust_iterations : int or mapping of matrix name to int
        pyfaust's iterations per PALM4MSA run (its default is 500).
    structmat_variants : mapping of method label to ``fit_sparse_product`` options, optional
        Default :data:`DEFAULT_VARIANTS`: the default fit, and a slower continuation (``"structmat-thorough"``).
    csv_path : path, optional
        Rewritten after every cell; with ``resume``, finished cells are skipped.

    Returns
    -------
    list of dict with the keys in ``PYFAUST_COLUMNS``. A pyfaust that is not installed gives rows with
    ``status="skipped"``.
    """
    from structmat.approximators.sparse_product import fit_sparse_product

    variants = dict(structmat_variants or DEFAULT_VARIANTS)
    rows = read_rows(csv_path) if (csv_path is not None and resume) else []
    done = {(r["matrix"], r["budget"], r["method"], r["split"]) for r in rows}
    cells = []
    for name, W in matrices.items():
        for budget in budgets:
            for label in variants:
                cells.append((name, budget, label, ""))
            for split in splits:
                cells.append((name, budget, "pyfaust", f"{split:g}"))
    cells = [c for c in cells if (c[0], repr(c[1]), c[2], c[3]) not in done]
    try:
        import pyfaust  # noqa: F401
        missing = None
    except ImportError as exc:
        missing = f"pyfaust is not installed ({exc}); pip install 'structmat[faust]'"
    with single_thread():
        for name, budget, method, split in tqdm(cells, desc="pyfaust comparison", disable=not progress):
            W = check_weight(matrices[name], name=f"matrix {name!r}")
            m, n = W.shape
            limit = resolve_budget(budget, W.shape)
            iterations = faust_iterations.get(name, 500) if isinstance(faust_iterations, Mapping) else faust_iterations
            row = {"matrix": name, "m": m, "n": n, "budget": repr(budget), "budget_params": limit, "method": method,
                   "split": split, "iterations": iterations if method == "pyfaust" else ""}
            if method == "pyfaust" and missing:
                rows.append({**row, "status": "skipped", "message": missing})
                continue
            wall, cpu = time.perf_counter(), time.process_time()
            if method == "pyfaust":
                dense, nnz = _fit_pyfaust(W, limit, float(split), int(iterations))
            else:
                M = fit_sparse_product(W, budget, **variants[method])
                dense, nnz = M.to_dense(), M.nparams
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            error = float(np.linalg.norm(W - dense) / np.linalg.norm(W))
            rows.append({**row, "nparams": nnz, "relative_error": error, "fit_seconds": wall, "cpu_seconds": cpu,
                         "status": "ok", "message": ""})
            logger.info("pyfaust comparison: %s budget %s %s %s: error %.4f, %.1f s", name, budget, method, split,
                        error, wall)
            if csv_path is not None:
                write_rows(csv_path, rows, PYFAUST_COLUMNS)
    if csv_path is not None:
        write_rows(csv_path, rows, PYFAUST_COLUMNS)
    return rows


def summarize_pyfaust_comparison(rows: list[dict]) -> list[dict]:
    """One row per (matrix, budget, method): pyfaust's best split and its total time over the splits."""
    out: dict = {}
    for r in rows:
        if r["status"] != "ok":
            continue
        key = (r["matrix"], r["budget"], r["method"])
        error, seconds = float(r["relative_error"]), float(r["fit_seconds"])
        if key not in out:
            out[key] = {"matrix": r["matrix"], "budget": r["budget"], "method": r["method"], "relative_error": error,
                        "nparams": r["nparams"], "best_split": r["split"], "fit_seconds": seconds,
                        "total_seconds": seconds}
        else:
            entry = out[key]
            entry["total_seconds"] += seconds
            if error < entry["relative_error"]:
                entry.update(relative_error=error, nparams=r["nparams"], best_split=r["split"], fit_seconds=seconds)
    return list(out.values())
