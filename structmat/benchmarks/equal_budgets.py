"""Accuracy at equal parameters and at equal bytes: matrices × families × shares → relative errors, CSV and PNG.

A family that stores indices (sparse supports, permutations) pays for them in bytes, which a parameter count hides.
Every cell is therefore fitted twice:

- ``unit="params"``: ``nparams <= share · m · n``, the family's plain budget;
- ``unit="bytes"``: ``nbytes <= share · 4 m n`` (float32 values plus int32 indices). A family whose fit takes
  ``unit="bytes"`` (``lowrank_sparse``, ``block_sparse``) is fitted so directly. A family without indices has
  ``nbytes = 4 nparams``, so its byte fit is its parameter fit. Any other family (``sparse``, ``sparse_product``,
  …) is fitted at the largest parameter budget whose result fits in the bytes, found by bisection (each step a
  fit; ``nbytes`` grows with the budget for these families).

The CSV is rewritten after every cell and finished cells are skipped on a rerun. Fits run on one thread.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat._validation import check_weight, resolve_budget
from structmat.benchmarks.results import read_rows, write_rows
from structmat.benchmarks.timing import single_thread
from structmat.families import get_family
from structmat.metrics import relative_error

__all__ = ["EQUAL_BUDGET_COLUMNS", "run_equal_budgets", "plot_equal_budgets", "fit_within_bytes"]

logger = logging.getLogger(__name__)

EQUAL_BUDGET_COLUMNS = ["matrix", "m", "n", "family", "unit", "share", "budget_params", "nparams", "nbytes",
                        "params_share", "byte_share", "relative_error", "fit_seconds", "fits", "status", "message"]
UNITS = ("params", "bytes")


def _takes_unit(fit) -> bool:
    try:
        return "unit" in inspect.signature(fit).parameters
    except (TypeError, ValueError):
        return False


def fit_within_bytes(W: np.ndarray, family: str, share: float, **options):
    """``(M, fits)``: the family's fit with ``nbytes <= share · 4 m n`` and the number of fits it took.

    See the module docstring for the three cases. Raises ValueError when not even the family's smallest member
    fits in the bytes.
    """
    m, n = W.shape
    fit = get_family(family).fit
    byte_limit = 4 * resolve_budget(share, W.shape)
    if _takes_unit(fit):
        return fit(W, share, unit="bytes", **options), 1
    words = byte_limit // 4
    M = fit(W, words, **options)
    if M.nbytes <= byte_limit:
        return M, 1
    lo, hi, best, fits = 1, words - 1, None, 1  # invariant: budgets above hi overshoot the bytes
    while lo <= hi:
        mid = (lo + hi) // 2
        try:
            candidate = fit(W, mid, **options)
        except ValueError:  # below the family's smallest member
            lo = mid + 1
            fits += 1
            continue
        fits += 1
        if candidate.nbytes <= byte_limit:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ValueError(f"no {family} matrix of shape ({m}, {n}) fits in {byte_limit} bytes (budget share {share})")
    return best, fits


def run_equal_budgets(matrices: Mapping[str, np.ndarray], families: Sequence[str], shares: Sequence[float], *,
                      options: Mapping | None = None, csv_path=None, resume: bool = True,
                      progress: bool = False) -> list[dict]:
    """Fit every matrix with every family at every share, at equal parameters and at equal bytes.

    Parameters
    ----------
    matrices : mapping of name to array of shape (m, n)
    families : sequence of str
    shares : sequence of float in (0, 1]
        Shares of the dense parameter count and of the dense float32 bytes.
    options : mapping of family name to dict of fit options, optional
    csv_path : path, optional
        Rewritten after every cell; with ``resume``, cells already in it are not fitted again.

    Returns
    -------
    list of dict
        One row per (matrix, family, unit, share) with the keys in :data:`EQUAL_BUDGET_COLUMNS`.
    """
    options = dict(options or {})
    for family in families:
        get_family(family)
    matrices = {name: check_weight(W, name=f"matrix {name!r}") for name, W in matrices.items()}
    for share in shares:
        if isinstance(share, bool) or not isinstance(share, float):
            raise TypeError(f"shares must be floats in (0, 1]; got {type(share).__name__} {share!r}")
        for W in matrices.values():
            resolve_budget(share, W.shape)
    rows = read_rows(csv_path) if (csv_path is not None and resume) else []
    done = {(r["matrix"], r["family"], r["unit"], r["share"]) for r in rows}
    cells = [(name, family, unit, share) for name in matrices for family in families for share in shares
             for unit in UNITS if (name, family, unit, repr(share)) not in done]
    with single_thread():
        for name, family, unit, share in tqdm(cells, desc="equal budgets", disable=not progress):
            rows.append(_run_cell(name, matrices[name], family, unit, share, options.get(family, {})))
            logger.debug("equal budgets cell: %s", rows[-1])
            if csv_path is not None:
                write_rows(csv_path, rows, EQUAL_BUDGET_COLUMNS)
    return rows


def _run_cell(name, W, family, unit, share, options) -> dict:
    m, n = W.shape
    row = {"matrix": name, "m": m, "n": n, "family": family, "unit": unit, "share": repr(share),
           "budget_params": resolve_budget(share, W.shape)}
    start = time.perf_counter()
    try:
        if unit == "params":
            M, fits = get_family(family).fit(W, share, **options), 1
        else:
            M, fits = fit_within_bytes(W, family, share, **options)
    except ValueError as exc:
        return {**row, "status": "skipped", "message": str(exc)}
    seconds = time.perf_counter() - start
    limit = row["budget_params"] if unit == "params" else 4 * row["budget_params"]
    used = M.nparams if unit == "params" else M.nbytes
    if used > limit:
        raise RuntimeError(f"{family} used {used} {unit} for a limit of {limit}: a bug")
    return {**row, "budget_params": M.nparams if unit == "bytes" else row["budget_params"], "nparams": M.nparams,
            "nbytes": M.nbytes, "params_share": M.nparams / (m * n), "byte_share": M.nbytes / (4 * m * n),
            "relative_error": relative_error(W, M), "fit_seconds": seconds, "fits": fits, "status": "ok",
            "message": ""}


def plot_equal_budgets(rows: list[dict], path) -> None:
    """Relative error against the share at equal parameters (top) and equal bytes (bottom), one column per matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        raise ValueError("no successful cells to plot")
    names = list(dict.fromkeys(r["matrix"] for r in ok))
    families = list(dict.fromkeys(r["family"] for r in ok))
    fig, axes = plt.subplots(2, len(names), figsize=(4.6 * len(names), 7.5), squeeze=False)
    markers = "os^vD<>pXh*"
    for col, name in enumerate(names):
        for k, family in enumerate(families):
            for row_index, unit in enumerate(UNITS):
                cells = sorted((float(r["share"]), float(r["relative_error"])) for r in ok
                               if r["matrix"] == name and r["family"] == family and r["unit"] == unit)
                if cells:
                    axes[row_index, col].plot(*zip(*cells), marker=markers[k % len(markers)], label=family)
        first = next(r for r in ok if r["matrix"] == name)
        axes[0, col].set_title(f"{name.split(':')[-1]} ({first['m']}×{first['n']})", fontsize=9)
        axes[0, col].set_xlabel("parameters / dense parameters")
        axes[1, col].set_xlabel("bytes / dense float32 bytes (indices counted)")
        for ax in axes[:, col]:
            ax.set_ylabel("relative error ‖W − M‖_F / ‖W‖_F")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[0, 0].annotate("equal parameters", (0.02, 1.08), xycoords="axes fraction", fontsize=9, weight="bold")
    axes[1, 0].annotate("equal bytes", (0.02, 1.02), xycoords="axes fraction", fontsize=9, weight="bold")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
