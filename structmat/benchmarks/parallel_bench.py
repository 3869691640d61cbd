"""What parallel runs buy: one sweep run serially, on a local process pool and on a Dask ``LocalCluster``.

:func:`run_parallel_benchmark` runs the same sweep (matrices × families × budgets) once per executor, one after the
other in this process, each from scratch (no resume), and records for each run the wall time from the call to the
last row written (``wall_s``: pool or cluster start-up included, closing a ``LocalCluster`` afterwards not:
``close_s``), the sum of the fits' own seconds, and when and where every cell ran. From the per-cell timestamps
(the worker's clock around the task, the parent's clock when the result arrived; one machine, one clock) it
derives what a run costs beyond the fits:

``in_task_s``
    median seconds a cell spends in its task besides the fit (the relative error, the row), the same everywhere;
``between_tasks_s``
    median idle seconds of a worker between the end of one cell and the start of its next one: the executor's
    per-task cost of returning a result and dispatching the next task;
``result_latency_s``
    median seconds from a cell's end on its worker to its result arriving in the parent;
``startup_s``
    seconds from the call to the first cell starting (worker processes or cluster starting, imports);
``idle_per_task_s``
    worker-seconds of the run not spent inside a task, per cell: ``(workers × wall_s − task_s_sum) / cells``,
    everything beyond the cells themselves (start-up, dispatch, results, workers idle at the end);
``cores_used``
    CPU seconds of the cells over the wall time: how many cores the run actually got (a loaded machine gives less).

It also checks that every run wrote the same rows as the serial one (``fit_seconds`` aside), naming the variants
whose rows differ: a family whose fit stops on a wall-clock limit (``max_seconds`` of ``toeplitz_like`` and ``ldr``)
does less work when its worker gets less CPU, so its rows depend on the machine's load, serial or not. And it plots
a timeline of each run (one lane per worker process, one bar per cell).
"""

from __future__ import annotations

import csv
import logging
import os
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

from structmat.benchmarks.results import write_rows

__all__ = ["PARALLEL_COLUMNS", "TASK_COLUMNS", "run_parallel_benchmark", "plot_timelines", "parse_run"]

logger = logging.getLogger(__name__)

PARALLEL_COLUMNS = [
    "run", "executor", "workers", "cells", "wall_s", "ratio_to_serial", "fit_s_sum", "task_s_sum", "task_cpu_s_sum",
    "cores_used", "startup_s", "in_task_s", "between_tasks_s", "result_latency_s", "idle_per_task_s", "close_s",
    "same_rows_as_serial", "load_before", "load_after",
]
TASK_COLUMNS = ["run", "matrix", "variant", "budget", "worker", "start_s", "finish_s", "received_s", "task_s",
                "fit_s", "status"]


def parse_run(text: str) -> tuple[str, int]:
    """``"serial"``, ``"processes:2"`` or ``"dask-local:8"`` → (executor, workers)."""
    kind, _, count = text.partition(":")
    if kind == "serial" and not count:
        return "serial", 1
    if kind in ("processes", "dask-local") and count.isdigit() and int(count) >= 1:
        return ("processes" if kind == "processes" else "dask:local"), int(count)
    raise ValueError(f"a run is 'serial', 'processes:N' or 'dask-local:N' with N >= 1; got {text!r}")


def _load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _rows_without_times(path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != "fit_seconds"} for row in csv.DictReader(f)]


def _compare_rows(rows: list[dict], reference: list[dict]) -> str:
    """"yes", or "no: " and the variants whose rows differ from the reference (the serial run)."""
    if len(rows) != len(reference):
        return f"no: {len(rows)} rows against {len(reference)}"
    differ = sorted({r["variant"] for r, s in zip(rows, reference) if r != s})
    return "yes" if not differ else "no: " + " ".join(differ)


def _median(values) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


def _summarise(name, executor, workers, cells, start, end, results, received, rows, same) -> dict:
    fit = {(r["matrix"], r["variant"], r["budget"]): float(r.get("fit_seconds") or 0.0) for r in rows}
    by_worker = defaultdict(list)
    for r in results:
        by_worker[r.worker].append(r)
    gaps = []
    for lane in by_worker.values():
        lane.sort(key=lambda r: r.started)
        gaps += [b.started - a.finished for a, b in zip(lane, lane[1:])]
    in_task = [r.seconds - fit.get(r.key, 0.0) for r in results if r.ok]
    last = max(received.values(), default=end)
    return {
        "run": name, "executor": executor, "workers": workers, "cells": cells, "wall_s": last - start,
        "close_s": end - last,
        "fit_s_sum": sum(fit.values()), "task_s_sum": sum(r.seconds for r in results),
        "task_cpu_s_sum": sum(r.cpu_seconds for r in results),
        "cores_used": sum(r.cpu_seconds for r in results) / (last - start),
        "idle_per_task_s": (workers * (last - start) - sum(r.seconds for r in results)) / max(len(results), 1),
        "startup_s": min((r.started for r in results), default=start) - start,
        "in_task_s": _median(in_task), "between_tasks_s": _median(gaps),
        "result_latency_s": _median(received[r.index] - r.finished for r in results),
        "same_rows_as_serial": same,
    }


def run_parallel_benchmark(matrices: Mapping, families: Sequence, budgets: Sequence, runs: Sequence[str], *,
                           output_dir, progress: bool = False) -> tuple[list[dict], list[dict]]:
    """Run the sweep once per entry of ``runs`` (see :func:`parse_run`); write ``parallel.csv`` (one row per run),
    ``tasks.csv`` (one row per cell and run) and ``parallel.png`` in ``output_dir``.

    Returns
    -------
    (runs, tasks) : two lists of dict, with the keys in ``PARALLEL_COLUMNS`` and ``TASK_COLUMNS``.
    """
    from structmat.benchmarks.sweep import run_sweep

    parsed = [(text, *parse_run(text)) for text in runs]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary, timeline, reference = [], [], None
    for name, executor, workers in parsed:
        results, received = [], {}

        def arrived(result, results=results, received=received):
            results.append(result)
            received[result.index] = time.time()

        csv_path = output_dir / name.replace(":", "-") / "sweep.csv"
        load_before = _load()
        logger.info("bench-parallel: %s (load %.2f)", name, load_before or float("nan"))
        start = time.time()
        rows = run_sweep(matrices, families, budgets, csv_path=csv_path, resume=False, progress=progress,
                         jobs=workers, executor=executor, on_result=arrived)
        end = time.time()
        this = _rows_without_times(csv_path)
        if reference is None and executor == "serial":
            reference = this
        same = "" if reference is None else _compare_rows(this, reference)
        row = _summarise(name, executor, workers, len(rows), start, end, results, received, rows, same)
        row.update(load_before=load_before, load_after=_load())
        summary.append(row)
        fits = {(r["matrix"], r["variant"], r["budget"]): r.get("fit_seconds") for r in rows}
        for r in sorted(results, key=lambda r: (r.worker, r.started)):
            timeline.append({"run": name, "matrix": r.key[0], "variant": r.key[1], "budget": r.key[2],
                             "worker": r.worker, "start_s": r.started - start, "finish_s": r.finished - start,
                             "received_s": received[r.index] - start, "task_s": r.seconds, "fit_s": fits.get(r.key),
                             "status": r.status})
        write_rows(output_dir / "tasks.csv", timeline, TASK_COLUMNS)
        serial = next((s["wall_s"] for s in summary if s["executor"] == "serial"), None)
        for s in summary:
            s["ratio_to_serial"] = s["wall_s"] / serial if serial else None
        write_rows(output_dir / "parallel.csv", summary, PARALLEL_COLUMNS)
    plot_timelines(summary, timeline, output_dir / "parallel.png")
    _write_machine(output_dir / "machine.txt", matrices, families, budgets, runs)
    return summary, timeline


def _write_machine(path, matrices, families, budgets, runs) -> None:
    from structmat.speed_c.runner import _processor_name

    lines = [f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", f"processor: {_processor_name()}",
             f"cpus: {os.cpu_count()}", f"platform: {platform.platform()}",
             f"matrices: {', '.join(f'{k} {v.shape[0]}x{v.shape[1]}' for k, v in matrices.items())}",
             f"families: {', '.join(str(f) for f in families)}", f"budgets: {' '.join(map(str, budgets))}",
             f"runs: {' '.join(runs)}"]
    Path(path).write_text("\n".join(lines) + "\n")


def plot_timelines(summary: list[dict], timeline: list[dict], path) -> None:
    """One panel per run: a lane per worker process, a bar per cell (from its start to its end on the worker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [s["run"] for s in summary]
    lanes = {run: sorted({t["worker"] for t in timeline if t["run"] == run}) for run in runs}
    heights = [max(len(lanes[run]), 1) + 1.5 for run in runs]
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 0.45 * sum(heights) + 1.2), squeeze=False,
                             gridspec_kw={"height_ratios": heights}, sharex=True)
    variants = sorted({t["variant"] for t in timeline})
    colours = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")
    colour = {v: colours(i % colours.N) for i, v in enumerate(variants)}
    for ax, s in zip(axes[:, 0], summary):
        run = s["run"]
        for lane, worker in enumerate(lanes[run]):
            cells = [t for t in timeline if t["run"] == run and t["worker"] == worker]
            ax.broken_barh([(t["start_s"], t["finish_s"] - t["start_s"]) for t in cells], (lane - 0.4, 0.8),
                           facecolors=[colour[t["variant"]] for t in cells], edgecolor="white", linewidth=0.3)
        ax.axvline(s["wall_s"], color="black", linewidth=1)
        ax.set_xlim(left=0)
        ratio = f", {s['ratio_to_serial']:.2f} x serial" if s.get("ratio_to_serial") else ""
        ax.set_title(f"{run}: {s['wall_s']:.0f} s wall{ratio}; load {s['load_before']:.1f} → {s['load_after']:.1f}",
                     fontsize=9, loc="left")
        ax.set_yticks(range(len(lanes[run])))
        ax.set_yticklabels([f"worker {i + 1}" for i in range(len(lanes[run]))], fontsize=7)
        ax.set_ylim(-0.7, len(lanes[run]) - 0.3)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the run started (black line: last row written)")
    handles = [matplotlib.patches.Patch(color=colour[v], label=v) for v in variants]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(variants), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (0.45 * sum(heights) + 1.2)))
    fig.savefig(path, dpi=110)
    plt.close(fig)
