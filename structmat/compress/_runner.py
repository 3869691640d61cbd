"""Run fit tasks one after the other, each in a forked child process killed when its time limit is up.

A task is a module-level function and keyword arguments that are file paths and JSON values; it returns a JSON
row. The child is forked from this process (no interpreter start-up, no re-import: a few milliseconds), runs
BLAS, OpenMP and torch on one thread, and writes its row to a JSON file the parent reads; nothing is
pickled. Thread pools are held to one thread in this process before the fork, so the child inherits that and
touches no thread-pool API after it (GNU OpenMP hangs there once its pool has run). Where ``fork`` is not available, or with ``time_limit=None``, tasks run in this process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

from structmat.benchmarks.timing import single_thread

__all__ = ["run_task", "fork_available"]


def fork_available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def _execute(function: Callable, arguments: dict) -> dict:
    start = time.process_time()
    try:
        row = function(**arguments)
        return {"status": "ok", **row, "seconds": row.get("seconds", time.process_time() - start)}
    except (ValueError, TypeError) as exc:
        return {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # a failing fit is reported in its row, not raised through the whole grid
        return {"status": "error", "message": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=4)}


def _child(function: Callable, arguments: dict, outcome: str) -> None:
    row = _execute(function, arguments)
    tmp = outcome + ".tmp"
    with open(tmp, "w") as f:
        json.dump(row, f)
    os.replace(tmp, outcome)


def run_task(function: Callable, arguments: dict, *, time_limit: float | None) -> dict:
    """``function(**arguments)`` → its row with a ``status`` (``"ok"``, ``"error"`` or ``"timed out"``).

    With a time limit, the call runs in a forked child killed after ``time_limit`` seconds.
    """
    if time_limit is None or not fork_available():
        with single_thread():
            return _execute(function, arguments)
    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="structmat-fit-") as tmp:
        outcome = str(Path(tmp) / "row.json")
        child = context.Process(target=_child, args=(function, arguments, outcome), daemon=True)
        start = time.perf_counter()
        with single_thread():  # set before the fork: the child calls no thread-pool API (GNU OpenMP is not fork-safe)
            child.start()
        child.join(time_limit)
        if child.is_alive():
            child.kill()
            child.join()
            return {"status": "timed out", "message": f"did not finish within {time_limit:g} s",
                    "seconds": time.perf_counter() - start}
        if not os.path.exists(outcome):
            return {"status": "error", "message": f"the fit process died with exit code {child.exitcode}",
                    "seconds": time.perf_counter() - start}
        with open(outcome) as f:
            return json.load(f)
