"""Error sweep: matrices × families × budgets → relative error, parameters, bytes and fit time, as CSV and PNG.

Families plug in through the registry: any name in ``structmat.FAMILIES`` works, with no change here. A cell
whose budget is below the family's smallest matrix is recorded with ``status="skipped"`` and the reason.
The CSV is rewritten atomically after every cell and finished cells are skipped on a rerun, so an interrupted
sweep resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat._validation import check_weight, resolve_budget
from structmat.benchmarks.results import read_rows, write_rows
from structmat.benchmarks.timing import single_thread
from structmat.families import get_family
from structmat.metrics import relative_error

__all__ = ["Variant", "run_sweep", "plot_sweep", "SWEEP_COLUMNS"]

logger = logging.getLogger(__name__)

SWEEP_COLUMNS = [
    "matrix", "m", "n", "variant", "family", "budget", "budget_params", "nparams", "nbytes", "share",
    "byte_share", "relative_error", "fit_seconds", "status", "message",
]


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
              save_dir=None, resume: bool = True, progress: bool = False, one_thread: bool = True) -> list[dict]:
    """Fit every matrix with every family at every budget and record the results.

    Parameters
    ----------
    matrices : mapping of name to array of shape (m, n)
    families : sequence of family names or :class:`Variant`
    budgets : sequence of int >= 1 or float in (0, 1]
    csv_path : path, optional
        Rewritten after every cell; with ``resume``, cells already in it are not fitted again.
    save_dir : path, optional
        Also save each fitted matrix there as ``<matrix>__<variant>__<budget>.npz``.
    one_thread : bool
        Fit with BLAS and torch limited to one thread (fit times are quoted for one core).

    Returns
    -------
    list of dict
        One row per cell with the keys in ``SWEEP_COLUMNS``.
    """
    variants = [Variant.coerce(f) for f in families]
    for v in variants:
        get_family(v.family)  # fail early on an unknown name
    matrices = {name: check_weight(W, name=f"matrix {name!r}") for name, W in matrices.items()}
    for budget in budgets:
        for W in matrices.values():
            resolve_budget(budget, W.shape)
    rows = read_rows(csv_path) if (csv_path is not None and resume) else []
    done = {(r["matrix"], r["variant"], r["budget"]) for r in rows}
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    cells = [(name, v, b) for name in matrices for v in variants for b in budgets
             if (name, v.name, _budget_key(b)) not in done]
    if len(cells) < len(matrices) * len(variants) * len(budgets):
        logger.info("sweep: resuming, %d of %d cells already in %s", len(done), len(done) + len(cells), csv_path)
    with single_thread() if one_thread else contextlib.nullcontext():
        for name, variant, budget in tqdm(cells, desc="sweep", disable=not progress):
            row = _run_cell(name, matrices[name], variant, budget, save_dir)
            rows.append(row)
            logger.debug("sweep cell: %s", row)
            if csv_path is not None:
                write_rows(csv_path, rows, SWEEP_COLUMNS)
    return rows


def _run_cell(name: str, W: np.ndarray, variant: Variant, budget, save_dir) -> dict:
    m, n = W.shape
    limit = resolve_budget(budget, W.shape)
    row = {"matrix": name, "m": m, "n": n, "variant": variant.name, "family": variant.family,
           "budget": _budget_key(budget), "budget_params": limit}
    fit = get_family(variant.family).fit
    start = time.perf_counter()
    try:
        M = fit(W, budget, **dict(variant.options))
    except ValueError as exc:  # budget below the family's smallest matrix, or a shape the family refuses
        return {**row, "status": "skipped", "message": str(exc)}
    seconds = time.perf_counter() - start
    if M.nparams > limit:
        raise RuntimeError(f"{variant.name} returned {M.nparams} parameters for a budget of {limit}: a bug")
    if save_dir is not None:
        M.save(Path(save_dir) / f"{name}__{variant.name}__{_budget_key(budget)}.npz".replace("/", "_"))
    return {**row, "nparams": M.nparams, "nbytes": M.nbytes, "share": M.nparams / (m * n),
            "byte_share": M.nbytes / (4 * m * n), "relative_error": relative_error(W, M),
            "fit_seconds": seconds, "status": "ok", "message": ""}


def plot_sweep(rows: list[dict], path, *, title: str | None = None) -> None:
    """Relative error against parameter share (top) and byte share (bottom), one column per matrix.

    The ``lowrank`` family, when swept, is drawn as a black dashed reference line: every family that contains low
    rank (``structmat.families.CONTAINS_LOWRANK``) should lie on or below it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        raise ValueError("no successful sweep cells to plot")
    names = list(dict.fromkeys(r["matrix"] for r in ok))
    variants = list(dict.fromkeys(r["variant"] for r in ok))
    fig, axes = plt.subplots(2, len(names), figsize=(4.8 * len(names), 8), squeeze=False)
    markers = "os^vD<>pXh*"
    for col, name in enumerate(names):
        for k, v in enumerate(variants):
            cells = sorted((float(r["share"]), float(r["byte_share"]), float(r["relative_error"]))
                           for r in ok if r["matrix"] == name and r["variant"] == v)
            if not cells:
                continue
            share, byte_share, err = zip(*cells)
            style = dict(marker=markers[k % len(markers)], label=v)
            if v == "lowrank":
                style = dict(color="black", linestyle="--", marker="", linewidth=1.5, zorder=5,
                             label="lowrank (reference)")
            axes[0, col].plot(share, err, **style)
            axes[1, col].plot(byte_share, err, **style)
        first = next(r for r in ok if r["matrix"] == name)
        axes[0, col].set_title(f"{name} ({first['m']}×{first['n']})", fontsize=9)
        axes[0, col].set_xlabel("parameters / dense parameters")
        axes[1, col].set_xlabel("bytes / dense bytes (float32 values + int32 indices)")
        for ax in axes[:, col]:
            ax.set_ylabel("relative error ‖W − M‖_F / ‖W‖_F")
            ax.set_ylim(bottom=0)
            ax.set_xlim(left=0)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
