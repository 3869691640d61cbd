"""Every family that contains low rank against ``lowrank`` itself, in one run: plain fits and fits to the outputs.

A family in :data:`structmat.families.CONTAINS_LOWRANK` represents every rank-r matrix ``U Vᵀ`` at its own count
``r (m + n)``, so at the same budget its fit must never be worse than the ``lowrank`` fit, on the fit's own
objective: ``‖W − M‖_F / ‖W‖_F`` for a plain fit, and the output error ``‖(W − M) Xᵀ‖_F / ‖W Xᵀ‖_F`` on the fitting
rows ``X`` for a fit given ``inputs``. ``run_containment`` fits every matrix with every such family (and ``lowrank``)
at every share, plainly and, for the matrices that come with inputs, to their outputs; each row records both errors
(the output error also on held-out rows when given) and the one-thread CPU seconds of the fit.
:func:`structmat.benchmarks.lowrank_reference.compare_with_lowrank` then pairs each cell with low rank's
(``containment_summary`` does both). The CSV is rewritten after every cell and finished cells are skipped on a
rerun.

Run it as ``structmat bench-fits containment -m efficientnet_lite0:all -m gaussian:512x512 --cache CACHE -o DIR``.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat._validation import resolve_budget
from structmat.benchmarks.lowrank_reference import compare_with_lowrank, summarize
from structmat.benchmarks.results import read_rows, write_rows
from structmat.benchmarks.timing import single_thread
from structmat.families import CONTAINS_LOWRANK, get_family

__all__ = ["run_containment", "containment_summary", "plot_containment", "CONTAINMENT_COLUMNS",
           "containing_families"]

logger = logging.getLogger(__name__)

CONTAINMENT_COLUMNS = ["matrix", "m", "n", "share", "method", "family", "budget_params", "nparams",
                       "relative_error", "output_error", "held_out_output_error", "objective_error", "cpu_seconds",
                       "status", "message"]


def containing_families() -> list[str]:
    """``lowrank`` first, then every other family of :data:`~structmat.families.CONTAINS_LOWRANK` in registry order."""
    from structmat.families import FAMILIES

    return ["lowrank"] + [name for name in FAMILIES if name in CONTAINS_LOWRANK and name != "lowrank"]


def run_containment(matrices: Mapping[str, np.ndarray], families: Sequence[str] | None = None,
                    shares: Sequence[float] = (0.1, 0.25, 0.5), *, inputs: Mapping | None = None, csv_path=None,
                    resume: bool = True, progress: bool = False) -> list[dict]:
    """Fit every matrix with every family at every share, plain and (where ``inputs`` has the matrix) to its outputs.

    Parameters
    ----------
    matrices : mapping of name to array of shape (m, n)
    families : sequence of str, optional
        Default :func:`containing_families`. ``lowrank`` is added when missing: it is the reference.
    shares : sequence of float in (0, 1]
    inputs : mapping of matrix name to ``(fitting inputs, held-out rows or None)``, optional
        The fitting inputs are rows of shape (N, n) or an :class:`~structmat.InputStatistics`; each such matrix
        also gets a ``"data-aware"`` row per (family, share), whose objective is the output error on them.
    csv_path : path, optional
        Rewritten after every cell; with ``resume``, finished cells are skipped.

    Returns
    -------
    list of dict with the keys of ``CONTAINMENT_COLUMNS``; ``objective_error`` is the error the fit minimises.
    """
    from structmat.approximators import approximate
    from structmat.metrics import output_error, relative_error

    families = list(dict.fromkeys(["lowrank", *(families or containing_families())]))
    for name in families:
        get_family(name)
    inputs = dict(inputs or {})
    unknown = sorted(set(inputs) - set(matrices))
    if unknown:
        raise ValueError(f"inputs given for {unknown}, which are not among the matrices {sorted(matrices)}")
    for name, W in matrices.items():
        for share in shares:
            resolve_budget(share, W.shape)
    rows = read_rows(csv_path) if (csv_path is not None and resume) else []
    done = {(r["matrix"], r["share"], r["method"], r["family"]) for r in rows}
    cells = [(name, share, method, family) for name in matrices for share in shares
             for method in (("plain", "data-aware") if name in inputs else ("plain",)) for family in families
             if (name, repr(share), method, family) not in done]
    with single_thread():
        for name, share, method, family in tqdm(cells, desc="containment", disable=not progress):
            W = np.asarray(matrices[name], dtype=np.float64)
            fitting, held_out = inputs.get(name, (None, None))
            row = {"matrix": name, "m": W.shape[0], "n": W.shape[1], "share": repr(share), "method": method,
                   "family": family, "budget_params": resolve_budget(share, W.shape)}
            options = {"inputs": fitting} if method == "data-aware" else {}
            start = time.process_time()
            try:
                M = approximate(W, family, share, **options)
            except ValueError as exc:  # below the family's smallest member
                rows.append({**row, "status": "skipped", "message": str(exc)})
                continue
            seconds = time.process_time() - start
            fro = relative_error(W, M)
            out = output_error(W, M, fitting) if fitting is not None else ""
            held = output_error(W, M, held_out) if held_out is not None else ""
            rows.append({**row, "nparams": M.nparams, "relative_error": fro, "output_error": out,
                         "held_out_output_error": held, "objective_error": out if method == "data-aware" else fro,
                         "cpu_seconds": seconds, "status": "ok", "message": ""})
            logger.info("containment: %s share %s %s %s: %.6g in %.2f CPU s", name, share, method, family,
                        rows[-1]["objective_error"], seconds)
            if csv_path is not None:
                write_rows(csv_path, rows, CONTAINMENT_COLUMNS)
    return rows


def containment_summary(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """``(per-family summary, per-cell comparison)`` against ``lowrank`` on each row's objective.

    A cell is ``(matrix, share, method)``; the summary has, per family, the cells compared, the cells at or below
    low rank (rounding slack only, :data:`~structmat.benchmarks.lowrank_reference.TOLERANCE`), the worst (largest)
    excess over low rank's error, absolute and relative, and the median ratio to it.
    """
    comparison = compare_with_lowrank(rows, cell=("matrix", "share", "method"), error="objective_error")
    summary = summarize(comparison)
    for entry in summary:
        mine = [r for r in comparison if r["family"] == entry["family"]]
        entry["worst_relative_margin"] = max((r["error"] - r["lowrank_error"]) / r["lowrank_error"]
                                             for r in mine if r["lowrank_error"] > 0)
    return summary, comparison


def plot_containment(rows: list[dict], path) -> None:
    """Error against share, one panel per (matrix, method), low rank drawn as the dashed reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        raise ValueError("no successful containment cells to plot")
    panels = list(dict.fromkeys((r["matrix"], r["method"]) for r in ok))
    columns = min(4, len(panels))
    lines = -(-len(panels) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(3.6 * columns, 3.0 * lines), squeeze=False)
    for ax, (matrix, method) in zip(axes.flat, panels):
        mine = [r for r in ok if r["matrix"] == matrix and r["method"] == method]
        for family in dict.fromkeys(r["family"] for r in mine):
            points = sorted((float(r["share"]), float(r["objective_error"])) for r in mine if r["family"] == family)
            style = dict(color="black", linestyle="--", linewidth=2, zorder=3) if family == "lowrank" else \
                dict(marker="o", markersize=3, linewidth=1)
            ax.plot(*zip(*points), label=family, **style)
        ax.set_title(f"{matrix.replace('efficientnet_lite0:', 'lite0 ')}\n{method}", fontsize=8)
        ax.set_xlabel("share of dense parameters", fontsize=8)
        ax.set_ylabel("output error (fitting rows)" if method == "data-aware" else "‖W − M‖ / ‖W‖", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8)
    fig.suptitle("families containing low rank against low rank (dashed), at equal parameters", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
