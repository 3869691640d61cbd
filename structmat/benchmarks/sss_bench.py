"""SSS benchmarks: the fast fit against the plain approach at equal budgets, and how fit time scales with n.

``run_sss_comparison`` fits every matrix at every budget twice, with :func:`structmat.approximators.sss.fit_sss`
(one-sweep identification, searched K, dims, ordering and boundaries, refinement) and with
:class:`structmat.benchmarks.sss_baseline.PlainSSS` (full Hankel SVDs, uniform grid of K, uniform state dim), and
writes one CSV row per (matrix, budget) with both side by side; the fast fit's error is given before
(``fast_sweep_error``) and after refinement (``fast_error``), both measured on the dense matrix.

``run_sss_scaling`` times the default fit of n×n matrices for growing n in two budget regimes — a fixed share of
``n²`` (the state dim grows with n, so the cost ``O(n² d)`` grows like n³) and a fixed state dim (budget of the
uniform realization with K = n/32 stages and d = 32, cost about n²) — and reports the least-squares exponent of
``time ∝ n^p`` per regime. Everything runs on one thread; times are medians of ``repeats`` fits, as wall-clock
seconds and as process CPU seconds (which stay meaningful on a machine shared with other jobs).
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat._validation import check_weight, resolve_budget
from structmat.approximators.sss import fit_sss_detailed
from structmat.benchmarks.results import read_rows, write_rows
from structmat.benchmarks.sss_baseline import PLAIN_STAGE_GRID, PlainSSS
from structmat.benchmarks.timing import single_thread
from structmat.matrices.sss import sss_nparams, stage_sizes
from structmat.approximators._sss_identify import uniform_dims
from structmat.metrics import relative_error
from structmat.weights import synthetic_weight

__all__ = ["run_sss_comparison", "run_sss_scaling", "scaling_exponents", "SSS_COMPARISON_COLUMNS",
           "SSS_SCALING_COLUMNS"]

logger = logging.getLogger(__name__)

SSS_COMPARISON_COLUMNS = [
    "matrix", "m", "n", "budget", "budget_params",
    "plain_num_stages", "plain_state_dim", "plain_nparams", "plain_nbytes", "plain_error", "plain_seconds",
    "fast_num_stages", "fast_ordering", "fast_allocation", "fast_boundaries", "fast_max_state_dim",
    "fast_nparams", "fast_nbytes", "fast_sweep_error", "fast_error", "fast_refine_iterations", "fast_seconds",
    "error_ratio",
]

SSS_SCALING_COLUMNS = ["regime", "n", "budget_params", "num_stages", "max_state_dim", "nparams", "relative_error",
                       "seconds", "cpu_seconds", "repeats"]


def _budget_key(budget) -> str:
    return repr(budget) if isinstance(budget, float) else str(budget)


def run_sss_comparison(matrices: Mapping[str, np.ndarray], budgets: Sequence, *, csv_path=None,
                       stage_grid=PLAIN_STAGE_GRID, resume: bool = True, progress: bool = False,
                       **fit_options) -> list[dict]:
    """Fast fit against the plain approach for every matrix and budget (columns ``SSS_COMPARISON_COLUMNS``).

    ``fit_options`` go to ``fit_sss``. The CSV is rewritten after every row; with ``resume``, rows already in it
    are kept and not recomputed.
    """
    rows = read_rows(csv_path) if (csv_path is not None and resume) else []
    done = {(r["matrix"], r["budget"]) for r in rows}
    with single_thread():
        for name, W in tqdm(matrices.items(), desc="sss vs plain", disable=not progress):
            W = check_weight(W, name=f"matrix {name!r}")
            todo = [b for b in budgets if (name, _budget_key(b)) not in done]
            if not todo:
                continue
            plain = PlainSSS(W, stage_grid)
            for budget in todo:
                m, n = W.shape
                P, info = plain.fit(budget)
                start = time.perf_counter()
                F, report = fit_sss_detailed(W, budget, **fit_options)
                seconds = time.perf_counter() - start
                fast_error = relative_error(W, F)
                row = {"matrix": name, "m": m, "n": n, "budget": _budget_key(budget),
                       "budget_params": resolve_budget(budget, W.shape),
                       "plain_num_stages": info["num_stages"], "plain_state_dim": info["state_dim"],
                       "plain_nparams": P.nparams, "plain_nbytes": P.nbytes, "plain_error": info["error"],
                       "plain_seconds": info["seconds"],
                       "fast_num_stages": report.num_stages, "fast_ordering": report.ordering,
                       "fast_allocation": report.allocation, "fast_boundaries": report.boundaries,
                       "fast_max_state_dim": int(max(F.causal_dims.max(), F.anticausal_dims.max())),
                       "fast_nparams": F.nparams, "fast_nbytes": F.nbytes, "fast_sweep_error": report.sweep_error,
                       "fast_error": fast_error, "fast_refine_iterations": report.refine_iterations,
                       "fast_seconds": seconds, "error_ratio": fast_error / info["error"] if info["error"] else ""}
                logger.info("sss vs plain: %s budget %s: plain %.4f (K=%d, d=%d, %.1f s), fast %.4f -> %.4f "
                            "(K=%d, %s, %s, %s, %.2f s)", name, budget, info["error"], info["num_stages"],
                            info["state_dim"], info["seconds"], report.sweep_error, fast_error, report.num_stages,
                            report.ordering, report.allocation, report.boundaries, seconds)
                rows.append(row)
                if csv_path is not None:
                    write_rows(csv_path, rows, SSS_COMPARISON_COLUMNS)
    return rows


def _fixed_state_budget(n: int, state_dim: int = 32) -> int:
    K = max(2, n // state_dim)
    ms = stage_sizes(n, K)
    return sss_nparams(ms, ms, *uniform_dims(ms, ms, state_dim))


def run_sss_scaling(sizes: Sequence[int] = (512, 1024, 2048, 4096), *, share: float = 0.25, state_dim: int = 32,
                    kind: str = "powerlaw", repeats: int = 3, csv_path=None, progress: bool = False,
                    **fit_options) -> list[dict]:
    """Median fit time of ``fit_sss`` on seeded ``kind`` n×n matrices (see :func:`structmat.weights.synthetic_weight`)
    in the regimes ``"share=<share>"`` and ``"state_dim=<state_dim>"`` (columns ``SSS_SCALING_COLUMNS``)."""
    rows = []
    regimes = [(f"share={share}", lambda n: share), (f"state_dim={state_dim}", lambda n: _fixed_state_budget(n, state_dim))]
    with single_thread():
        for n in tqdm(sizes, desc="sss scaling", disable=not progress):
            W = synthetic_weight(kind, (int(n), int(n)), seed=0)
            for regime, budget_of in regimes:
                budget = budget_of(n)
                times, cpu_times = [], []
                for _ in range(repeats):
                    start, cpu = time.perf_counter(), time.process_time()
                    M, report = fit_sss_detailed(W, budget, **fit_options)
                    times.append(time.perf_counter() - start)
                    cpu_times.append(time.process_time() - cpu)
                rows.append({"regime": regime, "n": n, "budget_params": resolve_budget(budget, W.shape),
                             "num_stages": report.num_stages,
                             "max_state_dim": int(max(M.causal_dims.max(), M.anticausal_dims.max())),
                             "nparams": M.nparams, "relative_error": report.refined_error,
                             "seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu_times),
                             "repeats": repeats})
                logger.info("sss scaling: %s n=%d: %.2f s (K=%d)", regime, n, rows[-1]["seconds"], report.num_stages)
                if csv_path is not None:
                    write_rows(csv_path, rows, SSS_SCALING_COLUMNS)
    return rows


def scaling_exponents(rows: list[dict], column: str = "seconds") -> dict[str, float]:
    """Least-squares slope of log(``column``) (wall ``seconds`` or ``cpu_seconds``) against log(n), per regime."""
    out = {}
    for regime in dict.fromkeys(r["regime"] for r in rows):
        points = [(float(r["n"]), float(r[column])) for r in rows if r["regime"] == regime]
        if len(points) >= 2:
            x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
            out[regime] = float(np.polyfit(x, y, 1)[0])
    return out
