"""Fit time against matrix size, every family: CPU and wall seconds on one thread, and the growth exponent.

``run_fit_scaling`` fits seeded n×n matrices (:func:`structmat.weights.synthetic_weight`) at one share of ``n²`` for
growing n with each family's default options, on one thread, and records per cell the median wall-clock and process
CPU seconds over ``repeats`` fits (CPU seconds stay meaningful on a machine shared with other jobs) and the relative
error; a 32×32 fit of every family runs first, untimed, so that compiling the Numba kernels is not counted in the
smallest size. ``warmup`` untimed fits of the cell's own matrix may precede the timed ones: the first large fit in a
process also pays for touching fresh memory, which on some virtual machines (the development machine among them:
1.1 s for the first pass over a fresh 128 MB array, 12 ms for later ones) costs more than the fit's arithmetic.
``fit_time_exponents`` gives, per family, the exponent ``p`` of ``time ∝ n^p`` between the smallest and the largest
size. The CSV is rewritten after every cell and finished cells are skipped on a rerun.

Run it as ``python -m structmat.benchmarks.fit_scaling -f monarch sss -n 512 1024 2048 4096 -o DIR``.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from structmat._validation import resolve_budget
from structmat.benchmarks.results import format_table, read_rows, write_rows
from structmat.benchmarks.timing import single_thread
from structmat.families import get_family, structured_family_names
from structmat.metrics import relative_error
from structmat.weights import synthetic_weight

__all__ = ["run_fit_scaling", "fit_time_exponents", "plot_fit_scaling", "FIT_SCALING_COLUMNS", "main"]

logger = logging.getLogger(__name__)

FIT_SCALING_COLUMNS = ["family", "kind", "n", "share", "budget_params", "nparams", "relative_error", "cpu_seconds",
                       "wall_seconds", "repeats", "warmup", "status", "message"]


def run_fit_scaling(families: Sequence[str], sizes: Sequence[int] = (512, 1024, 2048, 4096), *, share: float = 0.25,
                    kind: str = "gaussian", repeats: int = 1, warmup: int = 0, csv_path=None, resume: bool = True,
                    progress: bool = False) -> list[dict]:
    """Median CPU and wall seconds of each family's default fit of a ``kind`` n×n matrix at ``share``, after
    ``warmup`` untimed fits of the same matrix.

    Returns one row per (family, n) with the keys of ``FIT_SCALING_COLUMNS``.
    """
    for name in families:
        get_family(name)
    rows = read_rows(csv_path) if (csv_path is not None and resume) else []
    done = {(r["family"], int(r["n"])) for r in rows}
    cells = [(int(n), f) for n in sizes for f in families if (f, int(n)) not in done]
    with single_thread():
        for family in dict.fromkeys(f for _, f in cells):  # compile the Numba kernels and import before timing
            try:
                get_family(family).fit(synthetic_weight(kind, (32, 32), seed=1), share)
            except ValueError:
                pass
        for n, family in tqdm(cells, desc="fit scaling", disable=not progress):
            W = synthetic_weight(kind, (n, n), seed=0)
            row = {"family": family, "kind": kind, "n": n, "share": share,
                   "budget_params": resolve_budget(share, W.shape), "repeats": repeats, "warmup": warmup}
            cpu, wall = [], []
            try:
                for _ in range(warmup):
                    get_family(family).fit(W, share)
                for _ in range(repeats):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    M = get_family(family).fit(W, share)
                    wall.append(time.perf_counter() - start)
                    cpu.append(time.process_time() - start_cpu)
            except ValueError as exc:
                row.update(status="skipped", message=str(exc))
            else:
                row.update(nparams=M.nparams, relative_error=relative_error(W, M),
                           cpu_seconds=statistics.median(cpu), wall_seconds=statistics.median(wall), status="ok",
                           message="")
            rows.append(row)
            logger.info("fit scaling: %s n=%d: %s CPU s", family, n, row.get("cpu_seconds"))
            if csv_path is not None:
                write_rows(csv_path, rows, FIT_SCALING_COLUMNS)
    return rows


def fit_time_exponents(rows: list[dict], column: str = "cpu_seconds") -> dict[str, float]:
    """Per family, ``p`` with ``time ∝ n^p`` between its smallest and largest fitted size."""
    out = {}
    for family in dict.fromkeys(r["family"] for r in rows):
        points = sorted((int(r["n"]), float(r[column])) for r in rows
                        if r["family"] == family and r.get("status") == "ok")
        if len(points) >= 2 and points[0][1] > 0:
            (n0, t0), (n1, t1) = points[0], points[-1]
            out[family] = math.log(t1 / t0) / math.log(n1 / n0)
    return out


def plot_fit_scaling(rows: list[dict], path, column: str = "cpu_seconds") -> None:
    """Fit seconds against n on log-log axes, one line per family, with the n² and n³ slopes for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        raise ValueError("no successful fit-scaling cells to plot")
    fig, ax = plt.subplots(figsize=(8.4, 4.8))
    exponents = fit_time_exponents(ok, column)
    colors = plt.get_cmap("tab20").colors
    for i, family in enumerate(dict.fromkeys(r["family"] for r in ok)):  # 20 distinct colours, 3 line styles
        points = sorted((int(r["n"]), float(r[column])) for r in ok if r["family"] == family)
        label = f"{family} (n^{exponents[family]:.2f})" if family in exponents else family
        ax.plot(*zip(*points), marker="os^D"[i % 4], color=colors[(2 * i) % 20 + (i // 10) % 2],
                linestyle=("-", "--", "-.")[i // 10 % 3], label=label)
    sizes = sorted({int(r["n"]) for r in ok})
    base = min(float(r[column]) for r in ok if int(r["n"]) == sizes[0])
    for power, style in ((2, ":"), (3, "--")):
        ax.plot(sizes, [base * (n / sizes[0]) ** power for n in sizes], color="grey", linestyle=style, linewidth=1,
                label=f"∝ n^{power}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("n (n×n matrix)")
    ax.set_ylabel(f"fit {column.replace('_', ' ')} (one thread)")
    ax.set_title(f"fit time at share {ok[0]['share']} of {ok[0]['kind']} matrices", fontsize=10)
    if max(float(r[column]) for r in ok) > 10:
        ax.axhline(30, color="red", linewidth=1, linestyle=":", label="30 s")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    """Command line: ``python -m structmat.benchmarks.fit_scaling``; writes fit_scaling.csv and fit_scaling.png."""
    parser = argparse.ArgumentParser(prog="python -m structmat.benchmarks.fit_scaling",
                                     description="one-thread fit time of each family's default fit against n")
    parser.add_argument("--family", "-f", nargs="+", default=None, help="families (default: every structured one)")
    parser.add_argument("--sizes", "-n", nargs="+", type=int, default=[512, 1024, 2048, 4096])
    parser.add_argument("--share", type=float, default=0.25)
    parser.add_argument("--kind", default="gaussian", choices=["gaussian", "powerlaw"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--output-dir", "-o", default="structmat-results/fit-scaling")
    parser.add_argument("--quiet", "-q", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    rows = run_fit_scaling(args.family or structured_family_names(), args.sizes, share=args.share, kind=args.kind,
                           repeats=args.repeats, warmup=args.warmup, csv_path=out / "fit_scaling.csv",
                           progress=not args.quiet)
    print(format_table(rows, ["family", "n", "nparams", "relative_error", "cpu_seconds", "wall_seconds", "status"]))
    for family, p in fit_time_exponents(rows).items():
        print(f"{family}: CPU time ∝ n^{p:.2f}")
    if any(r.get("status") == "ok" for r in rows):
        plot_fit_scaling(rows, out / "fit_scaling.png")
    print(f"wrote {out / 'fit_scaling.csv'} and {out / 'fit_scaling.png'}")


if __name__ == "__main__":
    main()
