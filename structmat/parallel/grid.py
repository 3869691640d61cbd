""":func:`run_grid`: run independent tasks serially, on a local process pool or on Dask, and yield their results.

See the package docstring (:mod:`structmat.parallel`) for the model and an example.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import numbers
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat.parallel.local import WorkItem, run_processes, run_serial
from structmat.parallel.tasks import Task, TaskResult, check_time_limit

__all__ = ["TaskError", "run_grid", "default_jobs", "check_jobs", "describe_executor", "SHARE_BYTES"]

logger = logging.getLogger(__name__)

#: Arrays and bytes of at least this many bytes are sent to workers once per run (a file for the local pool, a
#: scattered copy on Dask) rather than with every task that uses them.
SHARE_BYTES = 1 << 20

EXECUTORS = ("serial", "processes", "dask:local", "dask:<scheduler address>", "a dask.distributed.Client")


class TaskError(RuntimeError):
    """A task raised an exception on its worker, or lost its worker too many times (``result`` says which)."""

    def __init__(self, result: TaskResult):
        self.result = result
        where = f" on worker {result.worker}" if result.worker else ""
        detail = f"{result.error_type}: {result.message}" if result.error_type else result.message
        super().__init__(f"task {result.key} failed{where}: {detail}")


def default_jobs() -> int:
    """The number of CPUs this process may run on (its affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_jobs(jobs) -> int:
    """``jobs`` as a count of workers: an int >= 1, or -1 for :func:`default_jobs`."""
    if isinstance(jobs, bool) or not isinstance(jobs, numbers.Integral) or not (jobs >= 1 or jobs == -1):
        raise ValueError(f"jobs must be an int >= 1, or -1 for every CPU ({default_jobs()} here); got {jobs!r}")
    return default_jobs() if jobs == -1 else int(jobs)


def _executor_kind(executor, jobs: int):
    """("serial" | "processes" | "dask", dask target) for the ``executor`` argument."""
    if executor is None:
        return ("serial", None) if jobs == 1 else ("processes", None)
    if isinstance(executor, str):
        if executor in ("serial", "processes"):
            return executor, None
        if executor.startswith("dask:") and executor[5:]:
            return "dask", executor[5:]
    elif type(executor).__name__ == "Client" and type(executor).__module__.startswith("distributed"):
        return "dask", executor
    raise ValueError(f"executor must be None or one of {', '.join(EXECUTORS)}; got {executor!r}")


def describe_executor(executor, jobs: int) -> str:
    """A short description for logs and benchmark tables, e.g. ``"processes x2"`` or ``"dask:local x8"``."""
    jobs = check_jobs(jobs)
    kind, target = _executor_kind(executor, jobs)
    if kind == "serial":
        return "serial"
    if kind == "processes":
        return f"processes x{jobs}"
    if isinstance(target, str):
        return f"dask:{target}" + (f" x{jobs}" if target == "local" else "")
    return "dask:client"


def _check_threads(threads):
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads must be an int >= 1 (threads per task) or None; got {threads!r}")
    return int(threads)


def _large(value) -> bool:
    return (isinstance(value, np.ndarray) and value.nbytes >= SHARE_BYTES) or \
        (isinstance(value, bytes) and len(value) >= SHARE_BYTES)


def _work_items(tasks: Sequence[Task], share: bool) -> list[WorkItem]:
    """Tasks with their large arrays and bytes moved aside (``share``), the same object once for all tasks."""
    items = []
    for index, task in enumerate(tasks):
        arrays = {name: value for name, value in task.arguments.items() if share and _large(value)}
        if arrays:
            task = dataclasses.replace(task, arguments={k: v for k, v in task.arguments.items() if k not in arrays})
        items.append(WorkItem(index, task, arrays or None))
    return items


def _arrays_to_files(items: list[WorkItem], directory: Path) -> list[WorkItem]:
    """Local pool: each distinct large array (bytes) written once as ``.npy`` (``.bin``); tasks carry the path."""
    paths: dict[int, str] = {}
    out = []
    for item in items:
        if not item.arrays:
            out.append(item)
            continue
        arrays = {}
        for name, array in item.arrays.items():
            if id(array) not in paths:
                if isinstance(array, bytes):
                    paths[id(array)] = str(directory / f"shared{len(paths)}.bin")
                    Path(paths[id(array)]).write_bytes(array)
                else:
                    paths[id(array)] = str(directory / f"shared{len(paths)}.npy")
                    np.save(paths[id(array)], array, allow_pickle=False)
            arrays[name] = paths[id(array)]
        out.append(dataclasses.replace(item, arrays=arrays))
    return out


def run_grid(tasks: Sequence[Task], *, jobs: int = 1, executor=None, time_limit: float | None = None,
             threads: int | None = 1, errors: str = "raise", max_worker_deaths: int = 3, progress: bool = False,
             description: str = "tasks") -> Iterator[TaskResult]:
    """Run every task and yield its :class:`~structmat.parallel.tasks.TaskResult` as soon as it finishes.

    Parameters
    ----------
    tasks : sequence of Task
        The grid. Results carry each task's position (``result.index``), so a caller can restore the order.
    jobs : int
        Worker processes (``-1``: one per CPU), at most one per task. With ``executor=None``, 1 runs in this
        process.
    executor : None, "serial", "processes", "dask:local", "dask:<address>" or a ``dask.distributed.Client``
        Where the tasks run: this process; a local loky pool of ``jobs`` processes; a Dask ``LocalCluster`` of
        ``jobs`` single-threaded workers started (and closed) here; the Dask scheduler at ``<address>``
        (``tcp://host:8786``); or the cluster of an existing client. None picks "serial" for ``jobs=1``, else
        "processes".
    time_limit : float, optional
        Seconds a task may run (``Task.time_limit`` overrides it); such tasks run in a child process that is
        killed when the time is up, and come back with ``status="timed out"``.
    threads : int or None
        Threads each task may use (BLAS, OpenMP, torch, Numba), 1 by default; None leaves the libraries' own
        settings.
    errors : {"raise", "return"}
        On a task that raised, or whose worker died ``max_worker_deaths`` times: raise :class:`TaskError` (after
        stopping the other tasks; results already yielded stand), or yield its result (``status`` "error" or
        "lost").
    max_worker_deaths : int
        Local pool: how many times a task may lose its worker before it is reported "lost" (Dask uses its own
        ``distributed.scheduler.allowed-failures``).
    progress : bool
        A tqdm progress bar labelled ``description``.

    Yields
    ------
    TaskResult
        In order of completion, once per task.
    """
    tasks = list(tasks)
    for i, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise TypeError(f"tasks[{i}] must be a structmat.parallel.Task; got {type(task).__name__}")
    jobs = check_jobs(jobs)
    threads = _check_threads(threads)
    if time_limit is not None:
        time_limit = check_time_limit(time_limit)
    if errors not in ("raise", "return"):
        raise ValueError(f"errors must be 'raise' or 'return'; got {errors!r}")
    if isinstance(max_worker_deaths, bool) or not isinstance(max_worker_deaths, numbers.Integral) \
            or max_worker_deaths < 1:
        raise ValueError(f"max_worker_deaths must be an int >= 1; got {max_worker_deaths!r}")
    kind, target = _executor_kind(executor, jobs)
    if kind == "dask":
        from structmat.parallel.dask_cluster import import_distributed

        import_distributed()  # a missing extra fails before any work
    if not tasks:  # nothing to do (a resumed grid that is complete): start no workers
        return
    jobs = min(jobs, len(tasks))  # never more workers than tasks
    items = _work_items(tasks, share=kind != "serial")
    logger.debug("%s: %d tasks on %s", description, len(items), describe_executor(executor, jobs))
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=len(items), desc=description, disable=not progress))
        if kind == "serial":
            results = run_serial(items, threads=threads, time_limit=time_limit)
        elif kind == "processes":
            shared = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="structmat-grid-")))
            results = run_processes(_arrays_to_files(items, shared), jobs=jobs, threads=threads,
                                    time_limit=time_limit, max_worker_deaths=max_worker_deaths)
        else:
            from structmat.parallel.dask_cluster import run_dask

            results = run_dask(items, target=target, jobs=jobs, threads=threads, time_limit=time_limit)
        stack.callback(getattr(results, "close", lambda: None))
        for result in results:
            bar.update()
            if result.status in ("error", "lost"):
                logger.debug("task %s: %s\n%s", result.key, result.message, result.worker_traceback)
                if errors == "raise":
                    raise TaskError(result)
            yield result
