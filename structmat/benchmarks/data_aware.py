"""Plain against data-aware fits of a cached head: weight error, held-out output error, agreement, fit time.

On a feature cache with the backbone's dense head (``W``, ``b``, the logits), every family is fitted at every share
twice: to ``W`` (``‖W − M‖_F``) and to the head's outputs on the training rows (``inputs`` = their
:class:`~structmat.InputStatistics`). Each fit is measured on the held-out rows of the project's seeded split,
before any fine-tuning: output error ``‖(W − M) Xᵀ‖_F / ‖W Xᵀ‖_F`` and top-1 agreement of ``x Mᵀ + b`` with the
dense head. Fit seconds are one-thread medians over ``repeats`` fits, wall clock and process CPU time (which stays
meaningful on a machine shared with other jobs); ``stats_seconds`` (and ``stats_cpu_seconds``) is the time to form
``C``, which every data-aware fit of the cache shares: the median of ``repeats`` formations, timed like the fits (the
first pass over fresh memory can cost several times the arithmetic on a virtual machine, and only one of the two
sides would otherwise pay it). Each data-aware fit gets its own copy of the statistics, so the work a fit does on
``C`` (its Cholesky factor or eigendecomposition, say) is counted in that fit's time, not cached from the previous
one. The CSV is rewritten after every cell and finished cells are skipped on a rerun.

:func:`data_aware_summary` puts plain and data-aware side by side per family and share and checks the targets:
held-out output error with inputs at most ``0.85 ×`` the plain fit's, and fit CPU time with inputs at most
``3 ×`` the plain fit's plus the time to form ``C``.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat._validation import resolve_budget
from structmat.benchmarks.results import read_rows, write_rows
from structmat.benchmarks.timing import single_thread
from structmat.families import get_family
from structmat.metrics import output_error, relative_error

__all__ = ["DATA_AWARE_COLUMNS", "SUMMARY_COLUMNS", "run_data_aware_benchmark", "data_aware_summary",
           "plot_data_aware", "ERROR_RATIO_TARGET", "TIME_RATIO_TARGET"]

logger = logging.getLogger(__name__)

METHODS = ("plain", "data-aware")
#: With ``fisher=True``: also the data-aware fit with the logits weighted by the Fisher information of the dense
#: head's softmax on the training rows, for the families that keep their structure under row scaling.
FISHER_METHOD = "data-aware-fisher"
#: Targets: output error with inputs <= ERROR_RATIO_TARGET x plain; fit CPU time <= TIME_RATIO_TARGET x plain + C.
ERROR_RATIO_TARGET = 0.85
TIME_RATIO_TARGET = 3.0
SUMMARY_COLUMNS = ["family", "share", "plain_output_error", "data_aware_output_error", "error_ratio",
                   "error_target_met", "plain_agreement", "data_aware_agreement", "plain_fit_cpu_seconds",
                   "data_aware_fit_cpu_seconds", "stats_cpu_seconds", "time_ratio", "time_limit_cpu_seconds",
                   "time_target_met"]
DATA_AWARE_COLUMNS = ["family", "share", "method", "nparams", "params_share", "nbytes", "relative_error", "output_error",
                      "agreement", "fit_seconds", "fit_seconds_min", "fit_cpu_seconds", "repeats", "stats_seconds",
                      "stats_cpu_seconds", "train_rows", "test_rows", "status", "message"]


def _agreement(M, bias, test_rows, dense_top1) -> float:
    logits = test_rows @ M.to_dense().T + bias
    return float(np.mean(logits.argmax(axis=1) == dense_top1))


def head_and_statistics(cache, families: Sequence[str], shares: Sequence, *, repeats: int, test_share: float,
                        seed: int):
    """Check the arguments of a head benchmark and prepare it: the cache's dense head ``W, bias`` (float64), the
    seeded ``train, test`` split, and the input statistics of the training rows with the wall and CPU seconds they
    took to form."""
    from structmat.finetune import split_indices
    from structmat.statistics import InputStatistics

    head = cache.head_weights()
    if head is None:
        raise ValueError(f"the feature cache at {cache.directory} holds no dense head to approximate")
    W, bias = head
    W = np.asarray(W, dtype=np.float64)
    bias = np.zeros(W.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    for family in families:
        get_family(family)
    for share in shares:
        resolve_budget(share, W.shape)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1; got {repeats!r}")
    train, test = split_indices(cache.count, test_share, seed)
    seconds, cpu_seconds = [], []
    for _ in range(repeats):  # timed like the fits: the median of `repeats`, so both sides see warm memory alike
        start, start_cpu = time.perf_counter(), time.process_time()
        stats = InputStatistics.from_cache(cache, train)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - start_cpu)
    return W, bias, train, test, stats, statistics.median(seconds), statistics.median(cpu_seconds)


def run_data_aware_benchmark(cache, families: Sequence[str], shares: Sequence, *, test_share: float = 0.2,
                             seed: int = 0, repeats: int = 1, csv_path=None, resume: bool = True,
                             progress: bool = False, fisher: bool = False) -> list[dict]:
    """Fit every family at every share plainly and data-aware on ``cache``'s head; one row per fit.

    Parameters
    ----------
    cache : FeatureCache
        With the backbone's dense head and logits (``cache.head_weights()``).
    families : sequence of str
    shares : sequence of budgets (floats in (0, 1] or ints)
    test_share, seed
        The held-out split (:func:`structmat.finetune.split_indices`); statistics come from the other rows.
    repeats : int
        Fits per cell; the reported time is their median (the matrix of the first fit is measured).
    fisher : bool
        Also fit with ``output_weights`` = :func:`~structmat.approximators.data_aware.fisher_output_weights` of the
        training rows' logits (method ``"data-aware-fisher"``), where the family allows it.
    csv_path : path, optional
        Rewritten after every row; with ``resume`` rows already there are kept and not fitted again.
    """
    W, bias, train, test, stats, stats_seconds, stats_cpu_seconds = head_and_statistics(
        cache, families, shares, repeats=repeats, test_share=test_share, seed=seed)
    test_rows = np.asarray(cache.features.take(np.sort(test)), dtype=np.float64)
    dense_top1 = (test_rows @ W.T + bias).argmax(axis=1)

    rows = read_rows(csv_path) if (csv_path is not None and resume) else []
    done = {(r["family"], r["share"], r["method"]) for r in rows}
    methods = METHODS + ((FISHER_METHOD,) if fisher else ())
    weights = None
    if fisher:
        from structmat.approximators.data_aware import fisher_output_weights

        weights = fisher_output_weights(cache.logits.take(np.sort(train)))
    cells = [(f, s, m) for f in families for s in shares for m in methods if (f, repr(s), m) not in done
             and (m != FISHER_METHOD or get_family(f).matrix_class.supports_row_scaling())]
    common = dict(stats_seconds=stats_seconds, stats_cpu_seconds=stats_cpu_seconds, train_rows=len(train),
                  test_rows=len(test), repeats=repeats)
    with single_thread():
        for family, share, method in tqdm(cells, desc="data-aware", disable=not progress):
            row = {"family": family, "share": repr(share), "method": method, **common}
            options = {"inputs": stats} if method != "plain" else {}
            if method == FISHER_METHOD:
                options["output_weights"] = weights
            seconds, cpu_seconds, M = [], [], None
            try:
                for _ in range(repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    fitted = get_family(family).fit(W, share) if not options else _fit_with_inputs(
                        W, family, share, _copy(stats), options.get("output_weights"))
                    seconds.append(time.perf_counter() - t0)
                    cpu_seconds.append(time.process_time() - c0)
                    M = M or fitted
            except ValueError as exc:  # below the family's smallest member
                rows.append({**row, "status": "skipped", "message": str(exc)})
                continue
            rows.append({**row, "nparams": M.nparams, "params_share": M.params_share, "nbytes": M.nbytes, "relative_error": relative_error(W, M),
                         "output_error": output_error(W, M, test_rows),
                         "agreement": _agreement(M, bias, test_rows, dense_top1),
                         "fit_seconds": statistics.median(seconds), "fit_seconds_min": min(seconds),
                         "fit_cpu_seconds": statistics.median(cpu_seconds),
                         "status": "ok", "message": ""})
            logger.info("%s", rows[-1])
            if csv_path is not None:
                write_rows(csv_path, rows, DATA_AWARE_COLUMNS)
    return rows


def _copy(stats):
    """The same statistics (same bytes) without the cached eigendecomposition."""
    from structmat.statistics import InputStatistics

    return InputStatistics(stats.n_features).merge(stats)


def _number(value):
    return None if value in (None, "") else float(value)


def data_aware_summary(rows: list[dict]) -> list[dict]:
    """One row per family and share with both fits: output errors and their ratio, agreements, median fit CPU
    seconds, and whether the targets are met (``ERROR_RATIO_TARGET``, ``TIME_RATIO_TARGET``)."""
    cells = {}
    for r in rows:
        if r.get("status") == "ok":
            cells[(r["family"], str(r["share"]), r["method"])] = r
    out = []
    for (family, share, method), aware in cells.items():
        plain = cells.get((family, share, "plain"))
        if method != "data-aware" or plain is None:
            continue
        e_plain, e_aware = _number(plain["output_error"]), _number(aware["output_error"])
        t_plain, t_aware = _number(plain["fit_cpu_seconds"]), _number(aware["fit_cpu_seconds"])
        t_stats = _number(aware["stats_cpu_seconds"]) or 0.0
        ratio = e_aware / e_plain if e_plain else None
        limit = TIME_RATIO_TARGET * t_plain + t_stats
        out.append({"family": family, "share": share, "plain_output_error": e_plain,
                    "data_aware_output_error": e_aware, "error_ratio": ratio,
                    "error_target_met": ratio is not None and ratio <= ERROR_RATIO_TARGET,
                    "plain_agreement": _number(plain["agreement"]), "data_aware_agreement": _number(aware["agreement"]),
                    "plain_fit_cpu_seconds": t_plain, "data_aware_fit_cpu_seconds": t_aware,
                    "stats_cpu_seconds": t_stats, "time_ratio": t_aware / t_plain if t_plain else None,
                    "time_limit_cpu_seconds": limit, "time_target_met": t_aware <= limit})
    return out


def _fit_with_inputs(W, family, share, stats, output_weights=None):
    from structmat.approximators import approximate

    return approximate(W, family, share, inputs=stats, output_weights=output_weights)


def plot_data_aware(rows: list[dict], path, *, title: str | None = None) -> None:
    """Held-out output error (left) and agreement with the dense head (right) against share; one colour per
    family, dashed = plain fit, solid = data-aware fit, dotted = data-aware with Fisher-weighted logits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        raise ValueError("no successful cells to plot")
    families = list(dict.fromkeys(r["family"] for r in ok))
    colours = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, family in enumerate(families):
        for method, style in (("plain", "--"), ("data-aware", "-"), (FISHER_METHOD, ":")):
            cells = sorted((float(r["params_share"]), float(r["output_error"]), float(r["agreement"]))
                           for r in ok if r["family"] == family and r["method"] == method)
            if not cells:
                continue
            share, error, agreement = zip(*cells)
            kwargs = dict(linestyle=style, marker={"plain": "x", "data-aware": "o"}.get(method, "^"),
                          color=colours(i % colours.N),
                          label=f"{family}" if method == "data-aware" else None)
            axes[0].plot(share, error, **kwargs)
            axes[1].plot(share, agreement, **kwargs)
    axes[0].set(xlabel="parameters / dense parameters", ylabel="held-out output error ‖(W − M)Xᵀ‖/‖WXᵀ‖",
                ylim=(0, None))
    axes[1].set(xlabel="parameters / dense parameters", ylabel="top-1 agreement with the dense head",
                ylim=(0, 1.0))
    for ax in axes:
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="grey", linestyle="--", marker="x"), Line2D([], [], color="grey", marker="o")]
    labels += ["plain fit (‖W − M‖)", "data-aware fit (‖(W − M)Xᵀ‖)"]
    if any(r["method"] == FISHER_METHOD for r in ok):
        handles.append(Line2D([], [], color="grey", linestyle=":", marker="^"))
        labels.append("data-aware, Fisher-weighted logits")
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.suptitle(title or "plain vs data-aware fits, before fine-tuning")
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
