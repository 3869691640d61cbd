"""Error curves: for each layer and each candidate family, data-aware fits on a grid of budgets, cached on disk.

One *point* of a curve is one fit, ``approximate(W, family, budget, inputs=stats, **options)``, scored by its
relative output error on the calibration statistics, ``‖(W − M) Xᵀ‖_F / ‖W Xᵀ‖_F`` (:func:`structmat.output_error`),
with its exact ``nparams`` and deployment ``nbytes``. Every point is an independent task
(:func:`fit_point`: file paths and JSON values in, one JSON row out) run in a child process with a time limit, one
after the other (:mod:`structmat.compress._runner`).

The cache. Each layer gets a directory named by a hash of its weight and its statistics (so another calibration
set or another weight is another directory), holding ``layer.json`` (name, shape, dense latency), ``weight.npy``,
``stats.npz``, ``curve.json`` (the rows, rewritten atomically after every fit: an interrupted run loses nothing and
a re-run skips what is done) and ``matrices/`` with the fitted matrices of the points that an allocation can pick:
after a layer's fits, matrices *dominated* in both parameters and bytes (another point is as small and more
accurate) are deleted; a dominated point that is picked anyway (a family restriction, a latency limit) is fitted
again, deterministically. A second call with another budget reads everything from here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from structmat.compress._runner import run_task
from structmat.matrices.io import atomic_write
from structmat.statistics import InputStatistics

__all__ = ["fit_point", "LayerCurve", "compute_curves", "grid_budgets", "options_key", "CURVE_COLUMNS"]

logger = logging.getLogger(__name__)

CURVE_COLUMNS = ["family", "options", "budget", "nparams", "nbytes", "output_error", "frobenius_error", "seconds",
                 "latency_1_ms", "latency_32_ms", "status", "message"]
_VALUE_BYTES = 4  # dense layers deploy float32


def options_key(options: dict) -> str:
    """A short stable name for a family's options (``""`` for none)."""
    if not options:
        return ""
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]


def fit_point(weight_path: str, stats_path: str, family: str, budget: int, options: dict, matrix_path: str) -> dict:
    """One point of a curve: the data-aware fit of the weight at ``weight_path`` (``.npy``) on the statistics at
    ``stats_path``; saves the matrix to ``matrix_path`` and returns its row (nparams, nbytes, errors, CPU seconds)."""
    from structmat.approximators import approximate
    from structmat.metrics import output_error, relative_error

    W = np.load(weight_path, allow_pickle=False)
    stats = InputStatistics.load(stats_path)
    start = time.process_time()
    M = approximate(W, family, int(budget), inputs=stats, **options)
    seconds = time.process_time() - start
    M.save(matrix_path)
    return {"nparams": int(M.nparams), "nbytes": int(M.nbytes), "output_error": output_error(W, M, stats),
            "frobenius_error": relative_error(W, M), "seconds": seconds}


def _layer_key(W: np.ndarray, stats: InputStatistics) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([list(W.shape), str(W.dtype), stats.count, stats.scale]).encode())
    h.update(np.ascontiguousarray(W).tobytes())
    h.update(np.ascontiguousarray(stats.normalized_second_moment).tobytes())
    return h.hexdigest()[:20]


@dataclass
class LayerCurve:
    """One layer's cached curves (see the module docstring)."""

    name: str
    directory: Path
    shape: tuple[int, int]
    rows: dict
    info: dict

    # ---------------------------------------------------------------- building
    @classmethod
    def open(cls, cache_root, name: str, W: np.ndarray, stats: InputStatistics) -> "LayerCurve":
        """The cache directory of this weight and these statistics under ``cache_root`` (created if new)."""
        directory = Path(cache_root) / _layer_key(W, stats)
        (directory / "matrices").mkdir(parents=True, exist_ok=True)
        if not (directory / "weight.npy").exists():
            atomic_write(directory / "weight.npy", lambda f: np.save(f, W, allow_pickle=False))
        if not (directory / "stats.npz").exists():
            stats.save(directory / "stats.npz")
        info_path = directory / "layer.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        info.update({"name": name, "shape": list(W.shape)})
        rows = {}
        if (directory / "curve.json").exists():
            for row in json.loads((directory / "curve.json").read_text()):
                rows[(row["family"], row["options"], int(row["budget"]))] = row
        curve = cls(name, directory, tuple(W.shape), rows, info)
        curve.save()
        return curve

    def save(self) -> None:
        rows = sorted(self.rows.values(), key=lambda r: (r["family"], r["options"], int(r["budget"])))
        atomic_write(self.directory / "curve.json", lambda f: f.write(json.dumps(rows, indent=1).encode()))
        atomic_write(self.directory / "layer.json", lambda f: f.write(json.dumps(self.info, indent=1).encode()))

    @property
    def dense_nparams(self) -> int:
        return self.shape[0] * self.shape[1]

    def dense_row(self) -> dict:
        """Keeping the layer dense: all its parameters, no error."""
        m, n = self.shape
        return {"family": "dense", "options": "", "budget": m * n, "nparams": m * n, "nbytes": _VALUE_BYTES * m * n,
                "output_error": 0.0, "frobenius_error": 0.0, "seconds": 0.0, "status": "ok", "message": "",
                "latency_1_ms": self.info.get("dense_latency_1_ms"), "latency_32_ms": self.info.get("dense_latency_32_ms")}

    def matrix_path(self, family: str, options: str, budget: int) -> Path:
        return self.directory / "matrices" / f"{family}{'-' + options if options else ''}-{int(budget)}.npz"

    def weight(self) -> np.ndarray:
        return np.load(self.directory / "weight.npy", allow_pickle=False)

    def statistics(self) -> InputStatistics:
        return InputStatistics.load(self.directory / "stats.npz")

    # ---------------------------------------------------------------- fitting
    def fit_arguments(self, family: str, options: dict, budget: int) -> dict:
        """The keyword arguments of :func:`fit_point` for one point (file paths and JSON values)."""
        path = self.matrix_path(family, options_key(options), int(budget))
        return {"weight_path": str(self.directory / "weight.npy"), "stats_path": str(self.directory / "stats.npz"),
                "family": family, "budget": int(budget), "options": dict(options), "matrix_path": str(path)}

    def fit(self, family: str, options: dict, budget: int, *, time_limit: float | None) -> dict:
        """Fit one point (unless cached) and record its row."""
        key = (family, options_key(options), int(budget))
        if key in self.rows:
            return self.rows[key]
        row = run_task(fit_point, self.fit_arguments(family, options, budget), time_limit=time_limit)
        return self.record(family, options, budget, row)

    def record(self, family: str, options: dict, budget: int, row: dict) -> dict:
        """Store the row of a finished fit (``status`` ``"ok"``, ``"error"``, ``"timed out"``...) and save."""
        key = (family, options_key(options), int(budget))
        row = {column: row.get(column) for column in CURVE_COLUMNS if column not in ("family", "options", "budget")}
        row.update({"family": family, "options": key[1], "budget": int(budget), "message": row.get("message") or ""})
        if row["status"] != "ok":
            (logger.debug if "below the smallest" in row["message"] else logger.info)("%s: %s at budget %d: %s (%s)", self.name, family, budget, row["status"], row["message"])
        self.rows[key] = row
        self.save()
        return row

    def matrix(self, family: str, options: dict, budget: int, *, time_limit: float | None = None):
        """The fitted matrix of a point: from the cache, or fitted again when it was pruned."""
        import structmat

        key = (family, options_key(options), int(budget))
        path = self.matrix_path(*key)
        if not path.exists():
            self.rows.pop(key, None)
            row = self.fit(family, options, budget, time_limit=time_limit)
            if row["status"] != "ok":
                raise RuntimeError(f"layer {self.name!r}: refitting {family} at budget {budget} failed: "
                                   f"{row['message']}")
        return structmat.load(path)

    def points(self) -> list[dict]:
        """The usable points: every successful fit plus the dense layer."""
        return [r for r in self.rows.values() if r["status"] == "ok"] + [self.dense_row()]

    def prune(self) -> None:
        """Delete the matrices of points dominated in both parameters and bytes (see the module docstring)."""
        points = [r for r in self.rows.values() if r["status"] == "ok"] + [self.dense_row()]
        for row in points:
            if row["family"] == "dense":
                continue
            dominated = all(any(o is not row and o[cost] <= row[cost] and o["output_error"] <= row["output_error"]
                                and (o[cost] < row[cost] or o["output_error"] < row["output_error"])
                                for o in points) for cost in ("nparams", "nbytes"))
            if dominated:
                self.matrix_path(row["family"], row["options"], row["budget"]).unlink(missing_ok=True)

    def kept_points(self) -> list[dict]:
        """Successful structured points whose matrix is still in the cache."""
        return [r for r in self.rows.values() if r["status"] == "ok"
                and self.matrix_path(r["family"], r["options"], r["budget"]).exists()]


_WARM: set[str] = set()


def warm_up(family: str, options: dict) -> None:
    """Run a small data-aware fit of ``family`` in this process once, so that forked children inherit its compiled
    Numba kernels and initialised torch paths instead of compiling them again in every child (seconds each)."""
    if family in _WARM:
        return
    _WARM.add(family)
    from structmat.approximators import approximate

    rng = np.random.default_rng(0)
    try:
        approximate(rng.standard_normal((16, 12)), family, 0.5, inputs=rng.standard_normal((40, 12)), **options)
    except Exception as exc:  # only a speed-up: the real fits report their own errors
        logger.debug("warm-up of %s failed: %s", family, exc)


def grid_budgets(shape: tuple[int, int], shares, family: str, rank_multiple: int | None) -> list[int]:
    """Integer budgets of a layer for the grid's shares; low rank's rounded down to ranks that are multiples."""
    m, n = shape
    budgets = []
    for share in shares:
        budget = int(math.floor(share * m * n))
        if family == "lowrank" and rank_multiple:
            rank = (budget // (m + n)) // rank_multiple * rank_multiple
            budget = rank * (m + n)
        if budget >= 1 and budget < m * n and budget not in budgets:
            budgets.append(budget)
    return budgets


def _fit_cells(cells, time_limit, jobs: int, executor, bar) -> None:
    """Fit ``cells`` — (curve, family, options, budget) not cached yet — and record their rows.

    Serially (``jobs=1``, no executor) each fit runs in a child forked from this process
    (:mod:`structmat.compress._runner`); otherwise the cells are tasks of :func:`structmat.parallel.run_grid` (a
    local process pool or a Dask cluster sharing this file system), each fitted on one thread. A fit is a
    deterministic function of its files, so the rows and matrices are the same bytes either way; only the
    recorded CPU seconds differ.
    """
    if not cells:
        return
    if jobs == 1 and executor is None:
        for curve, family, options, budget in cells:
            curve.fit(family, options, budget, time_limit=time_limit)
            bar.update()
        return
    from structmat.parallel import Task, run_grid

    tasks = [Task("structmat.compress.curves:fit_point", curve.fit_arguments(family, options, budget),
                  key=(curve.name, family, int(budget))) for curve, family, options, budget in cells]
    for result in run_grid(tasks, jobs=jobs, executor=executor, time_limit=time_limit, errors="return"):
        curve, family, options, budget = cells[result.index]
        row = dict(result.value, status="ok") if result.ok else {
            "status": result.status, "message": f"{result.error_type}: {result.message}".strip(": "),
            "seconds": result.cpu_seconds}
        curve.record(family, options, budget, row)
        bar.update()


def compute_curves(curves: list[LayerCurve], plan: dict[str, dict], shares, *, rank_multiple: int | None = None,
                   screen_share: float | None = None, screen_keep: int | None = None,
                   time_limit: float | None = 120.0, prune: bool = True, progress: bool = False, jobs: int = 1,
                   executor=None) -> None:
    """Fit every layer × family × budget point that is not cached yet.

    Parameters
    ----------
    curves : list of LayerCurve
    plan : dict of family name -> options
        The structured candidate families (dense is always a candidate and needs no fit).
    shares : sequence of float in (0, 1)
        The grid, as shares of each layer's dense parameters.
    screen_share, screen_keep : optional
        Screening: first fit every family at ``screen_share`` only, then the full grid for the ``screen_keep``
        families with the smallest output error there (per layer). None fits every family on the whole grid.
    time_limit : float or None
        Seconds per fit (each in a child process); None runs serial fits in this process.
    prune : bool
        Delete the matrices of dominated points afterwards (:meth:`LayerCurve.prune`).
    jobs, executor :
        Where the fits run (:func:`structmat.parallel.run_grid`; see :func:`_fit_cells`). The default, one job
        and no executor, fits one point after the other in forked children.
    """
    if time_limit is not None and jobs == 1 and executor is None:
        for family, options in plan.items():
            warm_up(family, options)
    families = list(plan)
    screening = screen_share is not None and screen_keep is not None and len(families) > screen_keep
    chosen = {id(curve): families for curve in curves}
    bar = tqdm(desc="fitting curves", unit="fit", disable=not progress)
    if screening:
        cells = [(curve, family, plan[family], budget) for curve in curves for family in families
                 for budget in grid_budgets(curve.shape, [screen_share], family, rank_multiple)
                 if (family, options_key(plan[family]), budget) not in curve.rows]
        bar.total = len(cells)
        _fit_cells(cells, time_limit, jobs, executor, bar)
        for curve in curves:
            scores = {}
            for family in families:
                for budget in grid_budgets(curve.shape, [screen_share], family, rank_multiple):
                    row = curve.rows.get((family, options_key(plan[family]), budget))
                    if row is not None and row["status"] == "ok":
                        scores[family] = row["output_error"]
            chosen[id(curve)] = sorted(scores, key=lambda f: (scores[f], families.index(f)))[:screen_keep]
            curve.info["screened_families"] = chosen[id(curve)]
    cells = [(curve, family, plan[family], budget) for curve in curves for family in chosen[id(curve)]
             for budget in grid_budgets(curve.shape, shares, family, rank_multiple)
             if (family, options_key(plan[family]), budget) not in curve.rows]
    bar.total = (bar.total or 0) + len(cells)
    bar.refresh()
    _fit_cells(cells, time_limit, jobs, executor, bar)
    for curve in curves:
        if prune:
            curve.prune()
        curve.save()
    bar.close()
