"""Error sweep: matrices × families × budgets → relative error, parameters, bytes and fit time, as CSV and PNG.

Families plug in through the registry: any name in ``structmat.FAMILIES`` works, with no change here. A cell
whose budget is below the family's smallest matrix is recorded with ``status="skipped"`` and the reason.
The CSV is rewritten atomically after every cell and finished cells are skipped on a rerun, so an interrupted
sweep resumes where it stopped. Cells are tasks of :func:`structmat.parallel.run_grid`: they run serially, on a
local process pool or on a Dask cluster, and the CSV lists them in grid order whatever order they finish in.

With ``inputs`` (the rows a layer sees, or their :class:`~structmat.InputStatistics`), cells are fitted to the
layer's outputs on them (``method="data-aware"``: ``approximate(W, family, budget, inputs=...)``), and every row
also gets ``output_error`` = ``‖(W − M) Xᵀ‖_F / ‖W Xᵀ‖_F`` on those inputs; ``methods=("data-aware", "plain")``
adds the plain fits, measured on the same inputs. The statistics travel to the workers as the bytes of their
``.npz`` file, once per run.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat._validation import check_weight, resolve_budget
from structmat.families import get_family
from structmat.matrices.io import atomic_write
from structmat.metrics import output_error, relative_error

__all__ = ["Variant", "run_sweep", "plot_sweep", "fit_cell", "SWEEP_COLUMNS"]

logger = logging.getLogger(__name__)

SWEEP_COLUMNS = [
    "matrix", "m", "n", "variant", "family", "method", "budget", "budget_params", "nparams", "nbytes", "share",
    "byte_share", "relative_error", "output_error", "input_rows", "fit_seconds", "status", "message",
]
#: ``plain``: fitted to ``‖W − M‖_F``; ``data-aware``: fitted to the outputs on the sweep's inputs.
METHODS = ("plain", "data-aware")


@dataclass(frozen=True)
class Variant:
    """A family with fixed fit options, e.g. ``Variant("lowrank", {"method": "randomized"}, "lowrank-rsvd")``."""

    family: str
    options: Mapping = field(default_factory=dict)
    label: str | None = None

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if not self.options:
            return self.family
        return self.family + "[" + ",".join(f"{k}={v}" for k, v in sorted(self.options.items())) + "]"

    @classmethod
    def coerce(cls, item) -> "Variant":
        if isinstance(item, Variant):
            return item
        if isinstance(item, str):
            return cls(item)
        raise TypeError(f"a sweep family must be a family name or a Variant; got {type(item).__name__} {item!r}")


def _budget_key(budget) -> str:
    return repr(budget) if isinstance(budget, float) else str(budget)


def run_sweep(matrices: Mapping[str, np.ndarray], families: Sequence, budgets: Sequence, *, csv_path=None,
              save_dir=None, resume: bool = True, progress: bool = False, one_thread: bool = True, jobs: int = 1,
              executor=None, time_limit: float | None = None, seed: int | None = 0, on_result=None, inputs=None,
              methods: Sequence[str] | None = None) -> list[dict]:
    """Fit every matrix with every family at every budget and record the results.

    Parameters
    ----------
    matrices : mapping of name to array of shape (m, n)
    families : sequence of family names or :class:`Variant`
    budgets : sequence of int >= 1 or float in (0, 1]
    csv_path : path, optional
        Rewritten after every cell, rows in grid order (matrix, then variant, then method, then budget); with
        ``resume``, cells already in it are not fitted again (except those that timed out or lost their worker).
    save_dir : path, optional
        Also save each fitted matrix there as ``<matrix>__<variant>__<budget>.npz`` (data-aware fits:
        ``<matrix>__<variant>__<budget>__data-aware.npz``).
    one_thread : bool
        Fit with BLAS, OpenMP, torch and Numba limited to one thread (fit times are quoted for one core).
    jobs, executor :
        Where the cells run: serially here (``jobs=1``), on ``jobs`` local worker processes, or on Dask
        (``executor="dask:local"``, ``"dask:<scheduler address>"`` or a ``Client``); see
        :func:`structmat.parallel.run_grid`. The rows are the same whatever runs them; only ``fit_seconds``
        (a measurement) differs.
    time_limit : float, optional
        Seconds one fit may take; a fit still running then is killed and recorded with ``status="timed out"``.
    seed : int or None
        Passed to every fit that takes a ``seed`` (randomized SVDs, orderings) unless its variant sets one, so
        that a sweep gives the same rows every time; None leaves the families' own defaults.
    on_result : callable, optional
        Called in this process with each cell's :class:`~structmat.parallel.TaskResult` as it arrives (where and
        when it ran: ``worker``, ``started``, ``finished``), before its row is written.
    inputs : array_like of shape (N, n), InputStatistics, or mapping of matrix name to either, optional
        The inputs each matrix's layer sees (one value for every matrix, which must then share ``n``, or one per
        matrix name; a matrix left out of the mapping gets plain fits only). Rows are reduced to their
        statistics once, here.
    methods : sequence of {"data-aware", "plain"}, optional
        The fits of every cell: default ``("data-aware",)`` with ``inputs``, ``("plain",)`` without. Both give
        a data-aware row and a plain row per cell, each with its ``output_error`` on the inputs.

    Returns
    -------
    list of dict
        One row per cell and method with the keys in ``SWEEP_COLUMNS``.
    """
    from structmat.parallel import ResumableTable, Task, run_grid

    variants = [Variant.coerce(f) for f in families]
    for v in variants:
        get_family(v.family)  # fail early on an unknown name
    matrices = {name: check_weight(W, name=f"matrix {name!r}") for name, W in matrices.items()}
    for budget in budgets:
        for W in matrices.values():
            resolve_budget(budget, W.shape)
    statistics = _statistics_bytes(matrices, inputs)
    methods = _check_methods(methods, statistics)
    grid = [(name, v, method, b) for name in matrices for v in variants for method in methods for b in budgets
            if method == "plain" or name in statistics]
    table = ResumableTable(csv_path, SWEEP_COLUMNS, ("matrix", "variant", "method", "budget"), resume=resume,
                           order=[(name, v.name, method, _budget_key(b)) for name, v, method, b in grid],
                           redo=REDO_STATUSES, defaults={"method": "plain"})
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    cells = [(name, v, method, b) for name, v, method, b in grid
             if not table.done((name, v.name, method, _budget_key(b)))]
    if len(cells) < len(grid):
        logger.info("sweep: resuming, %d of %d cells already in %s", len(grid) - len(cells), len(grid), csv_path)
    tasks = [Task(fit_cell, {"name": name, "W": matrices[name], "family": v.family, "options": _options(v, seed),
                             "variant": v.name, "budget": budget, "save": save_dir is not None, "method": method,
                             "inputs_npz": statistics.get(name)},
                  key=(name, v.name, method, _budget_key(budget)))
             for name, v, method, budget in _largest_first(cells, matrices)]
    for result in run_grid(tasks, jobs=jobs, executor=executor, time_limit=time_limit,
                           threads=1 if one_thread else None, progress=progress, description="sweep"):
        name, variant_name, method, budget_key = result.key
        if on_result is not None:
            on_result(result)
        if result.ok:
            row = dict(result.value)
            matrix_bytes = row.pop("matrix_npz", None)
            if matrix_bytes is not None:
                atomic_write(Path(save_dir) / _matrix_file(name, variant_name, budget_key, method),
                             lambda f: f.write(matrix_bytes))
        else:  # timed out, or its worker died too often
            W = matrices[name]
            variant = next(v for v in variants if v.name == variant_name)
            row = {"matrix": name, "m": W.shape[0], "n": W.shape[1], "variant": variant_name,
                   "family": variant.family, "method": method, "budget": budget_key,
                   "budget_params": resolve_budget(_parse_budget(budget_key), W.shape), "status": result.status,
                   "message": result.message}
        logger.debug("sweep cell: %s", row)
        table.add(row)
    return table.rows


def _statistics_bytes(matrices: Mapping[str, np.ndarray], inputs) -> dict:
    """``{matrix name: bytes of its InputStatistics file}`` for the matrices that have inputs."""
    if inputs is None:
        return {}
    from structmat.approximators.data_aware import as_statistics
    from structmat.parallel.tasks import to_file_bytes

    if isinstance(inputs, Mapping):
        unknown = sorted(set(inputs) - set(matrices))
        if unknown:
            raise ValueError(f"inputs are given for {unknown}, which are not among the matrices {sorted(matrices)}")
        per_matrix = {name: inputs[name] for name in matrices if name in inputs}
    else:
        per_matrix = {name: inputs for name in matrices}
    encoded, seen = {}, {}
    for name, value in per_matrix.items():
        n = matrices[name].shape[1]
        try:
            stats = as_statistics(value, n)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"inputs for matrix {name!r} ({matrices[name].shape[0]}x{n}): {exc}") from None
        if id(value) not in seen:  # one statistics file per distinct value: workers get the same bytes once
            seen[id(value)] = to_file_bytes(stats)
        encoded[name] = seen[id(value)]
    return encoded


def _check_methods(methods, statistics: dict) -> tuple[str, ...]:
    if methods is None:
        return ("data-aware",) if statistics else ("plain",)
    methods = tuple(dict.fromkeys([methods] if isinstance(methods, str) else methods))
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods must be a non-empty sequence of {METHODS}; got {list(methods)}")
    if "data-aware" in methods and not statistics:
        raise ValueError("method 'data-aware' needs inputs: the rows each layer sees (or their InputStatistics)")
    return methods


#: Statuses of cells that a resumed sweep runs again (their fit did not run to an answer).
REDO_STATUSES = ("timed out", "lost")


def _options(variant: Variant, seed) -> dict:
    options = dict(variant.options)
    takes_seed = "seed" in inspect.signature(get_family(variant.family).fit).parameters
    if seed is not None and "seed" not in options and takes_seed:
        options["seed"] = seed
    return options


def _largest_first(cells, matrices):
    """Cells in order of decreasing matrix size and budget: long fits start first, so the last ones to finish are
    short and the workers finish together. (The CSV's order does not depend on this.)"""
    def size(cell):
        name, _, _, budget = cell
        return -resolve_budget(budget, matrices[name].shape)

    return sorted(cells, key=size)


def _parse_budget(key: str):
    return float(key) if any(c in key for c in ".eE") else int(key)


def _matrix_file(name: str, variant: str, budget_key: str, method: str = "plain") -> str:
    suffix = "" if method == "plain" else f"__{method}"
    return f"{name}__{variant}__{budget_key}{suffix}.npz".replace("/", "_")


def fit_cell(name: str, W: np.ndarray, family: str, options: dict, variant: str, budget, save: bool = False,
             method: str = "plain", inputs_npz: bytes | None = None) -> dict:
    """One sweep cell, as a task: fit ``W`` with ``family`` at ``budget`` and return its row (plus, with ``save``,
    the fitted matrix's ``.npz`` bytes under ``"matrix_npz"``).

    ``inputs_npz`` holds the bytes of an :class:`~structmat.InputStatistics` file: the row then gets the output
    error on those inputs, and ``method="data-aware"`` fits to them (``fit_seconds`` includes the fit's own work
    on the statistics, such as the eigendecomposition of ``C``)."""
    from structmat.parallel import matrix_to_bytes

    m, n = W.shape
    limit = resolve_budget(budget, W.shape)
    row = {"matrix": name, "m": m, "n": n, "variant": variant, "family": family, "method": method,
           "budget": _budget_key(budget), "budget_params": limit}
    stats = None
    if inputs_npz is not None:
        from structmat.parallel.tasks import from_file_bytes
        from structmat.statistics import InputStatistics

        stats = from_file_bytes(inputs_npz, InputStatistics.load)
        row["input_rows"] = stats.count
    if method == "data-aware" and stats is None:
        raise ValueError(f"cell {name}/{variant}/{budget}: method 'data-aware' needs inputs_npz")
    start = time.perf_counter()
    try:
        if method == "data-aware":
            from structmat.approximators import approximate

            M = approximate(W, family, budget, inputs=stats, **dict(options))
        else:
            M = get_family(family).fit(W, budget, **dict(options))
    except ValueError as exc:  # budget below the family's smallest matrix, or a shape the family refuses
        return {**row, "status": "skipped", "message": str(exc)}
    seconds = time.perf_counter() - start
    if M.nparams > limit:
        raise RuntimeError(f"{variant} returned {M.nparams} parameters for a budget of {limit}: a bug")
    row = {**row, "nparams": M.nparams, "nbytes": M.nbytes, "share": M.nparams / (m * n),
           "byte_share": M.nbytes / (4 * m * n), "relative_error": float(relative_error(W, M)),
           "fit_seconds": seconds, "status": "ok", "message": ""}
    if stats is not None:
        row["output_error"] = float(output_error(W, M, stats))
    if save:
        row["matrix_npz"] = matrix_to_bytes(M)
    return row


def plot_sweep(rows: list[dict], path, *, title: str | None = None) -> None:
    """Relative error against parameter share (top) and byte share (middle), one column per matrix; when rows
    have an output error (a sweep with inputs), that against parameter share too (bottom).

    The ``lowrank`` family, when swept, is drawn as a black dashed reference line: every family that contains low
    rank (``structmat.families.CONTAINS_LOWRANK``) should lie on or below it. With both methods in the rows, plain
    fits are dashed and data-aware fits solid. Variants whose errors and shares are the same on a matrix (families
    that return their low-rank member often are) are drawn once there, their legend entry naming each of them; each
    family keeps one colour and marker (:func:`structmat.benchmarks.plot_style.family_style`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from structmat.benchmarks.plot_style import family_style, group_label, identical_groups

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        raise ValueError("no successful sweep cells to plot")
    names = list(dict.fromkeys(r["matrix"] for r in ok))
    variants = list(dict.fromkeys(r["variant"] for r in ok))
    methods = list(dict.fromkeys(r.get("method") or "plain" for r in ok))
    with_outputs = any(r.get("output_error") not in (None, "") for r in ok)
    panels = 3 if with_outputs else 2
    fig, axes = plt.subplots(panels, len(names), figsize=(4.8 * len(names), 4 * panels), squeeze=False)
    for col, name in enumerate(names):
        for method in methods:
            curves = {}
            for v in variants:
                cells = sorted((float(r["share"]), float(r["byte_share"]), float(r["relative_error"]),
                                float(r["output_error"]) if r.get("output_error") not in (None, "") else np.nan)
                               for r in ok if r["matrix"] == name and r["variant"] == v
                               and (r.get("method") or "plain") == method)
                if cells:
                    curves[v] = cells
            for group in identical_groups(curves, atol=5e-5):
                lead = "lowrank" if "lowrank" in group else group[0]
                share, byte_share, err, out_err = zip(*curves[lead])
                label = group_label([lead] + [g for g in group if g != lead])
                style = {**family_style(lead), "markersize": 5,
                         "label": label if len(methods) == 1 else f"{label}, {method}"}
                if len(methods) > 1:
                    style["linestyle"] = "--" if method == "plain" else "-"
                axes[0, col].plot(share, err, **style)
                axes[1, col].plot(byte_share, err, **style)
                if with_outputs:
                    axes[2, col].plot(share, out_err, **style)
        first = next(r for r in ok if r["matrix"] == name)
        axes[0, col].set_title(f"{name} ({first['m']}×{first['n']})", fontsize=9)
        axes[0, col].set_xlabel("parameters / dense parameters")
        axes[1, col].set_xlabel("bytes / dense bytes (float32 values + int32 indices)")
        for ax in axes[:2, col]:
            ax.set_ylabel("relative error ‖W − M‖_F / ‖W‖_F")
        if with_outputs:
            axes[2, col].set_xlabel("parameters / dense parameters")
            axes[2, col].set_ylabel("output error ‖(W − M)Xᵀ‖_F / ‖WXᵀ‖_F")
        for ax in axes[:, col]:
            ax.set_ylim(bottom=0)
            ax.set_xlim(left=0)
            ax.grid(alpha=0.3)
        axes[0, col].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
