"""Run one task in a fresh interpreter that is killed when its time limit is up.

A fit cannot be interrupted from inside Python (a LAPACK call or a Numba kernel does not look at signals), so a
task with a time limit runs in a child process, wherever the task was sent (the parent, a pool worker, a Dask
worker). The task goes to the child as files in a temporary directory — ``task.json`` plus one ``.npy`` per array
and one file per bytes value — and the outcome comes back the same way: nothing crosses with pickle. The child
starts with every threading library held to the worker's thread count; when the time is up it is killed and the
task is reported ``"timed out"``. The price is an interpreter start-up per task (about a second with structmat's
imports), which is why tasks without a time limit run in the worker itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from structmat.parallel.tasks import (Task, TaskResult, _json_default, execute, read_shared, thread_environment,
                                      to_json_ready, worker_name)

__all__ = ["run_in_child", "run_task"]

_CHILD = "from structmat.parallel.child import _child_main; _child_main()"


def _write_values(directory: Path, stem: str, values: dict) -> None:
    plain, arrays, blobs = to_json_ready(values)
    array_files = {name: f"{stem}.array{i}.npy" for i, name in enumerate(arrays)}
    blob_files = {name: f"{stem}.bytes{i}.bin" for i, name in enumerate(blobs)}
    for name, array in arrays.items():
        np.save(directory / array_files[name], array, allow_pickle=False)
    for name, blob in blobs.items():
        (directory / blob_files[name]).write_bytes(blob)
    manifest = {"values": plain, "arrays": array_files, "bytes": blob_files}
    (directory / f"{stem}.json").write_text(json.dumps(manifest, default=_json_default))


def _read_values(directory: Path, stem: str) -> dict:
    manifest = json.loads((directory / f"{stem}.json").read_text())
    values = dict(manifest["values"])
    for name, file in manifest["arrays"].items():
        values[name] = np.load(directory / file, allow_pickle=False)
    for name, file in manifest["bytes"].items():
        values[name] = (directory / file).read_bytes()
    return values


def run_in_child(index: int, task: Task, time_limit: float, threads: int = 1, arrays=None) -> TaskResult:
    """:func:`~structmat.parallel.tasks.execute` in a fresh interpreter, killed after ``time_limit`` seconds.

    Returns the child's :class:`TaskResult`; ``status="timed out"`` when it was killed, ``status="error"`` with the
    child's last line of error output when it died without reporting (a crash in native code, say).
    """
    key = task.key if task.key is not None else (index,)
    arguments = {**task.arguments, **read_shared(arrays)}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="structmat-task-") as tmp:
        tmp = Path(tmp)
        _write_values(tmp, "arguments", arguments)
        (tmp / "task.json").write_text(json.dumps({"function": task.function, "index": index,
                                                   "key": list(key), "threads": threads}))
        env = {**os.environ, **thread_environment(threads)}
        start = time.perf_counter()
        try:
            child = subprocess.run([sys.executable, "-c", _CHILD, str(tmp)], env=env, capture_output=True,
                                   text=True, timeout=time_limit)
        except subprocess.TimeoutExpired:
            return TaskResult(index=index, key=key, status="timed out",
                              message=f"did not finish within the time limit of {time_limit:g} s",
                              seconds=time.perf_counter() - start, started=started, finished=time.time(),
                              worker=worker_name())
        outcome = tmp / "outcome.json"
        if not outcome.exists():
            last = (child.stderr.strip().splitlines() or ["no error output"])[-1]
            return TaskResult(index=index, key=key, status="error", error_type="ChildProcessError",
                              message=f"the task's process exited with code {child.returncode}: {last}",
                              worker_traceback=child.stderr, seconds=time.perf_counter() - start,
                              started=started, finished=time.time(), worker=worker_name())
        result = json.loads(outcome.read_text())
        value = _read_values(tmp, "value") if result["status"] == "ok" else None
    return TaskResult(index=index, key=key, value=value, **{k: v for k, v in result.items() if k != "key"})


def run_task(index: int, task: Task, threads: int | None, time_limit: float | None, arrays=None) -> TaskResult:
    """Run ``task`` wherever this is called: in a time-limited child when a limit applies, else right here."""
    limit = task.time_limit if task.time_limit is not None else time_limit
    if limit is not None:
        return run_in_child(index, task, limit, threads, arrays)
    return execute(index, task, threads, arrays)


def _child_main() -> None:
    """Entry point of the child: read the task, run it, write the outcome (and the returned dict) beside it."""
    tmp = Path(sys.argv[1])
    job = json.loads((tmp / "task.json").read_text())
    task = Task(job["function"], _read_values(tmp, "arguments"), key=tuple(job["key"]))
    result = execute(job["index"], task, threads=job["threads"])
    if result.status == "ok":
        _write_values(tmp, "value", result.value)
    fields = {k: getattr(result, k) for k in ("status", "error_type", "message", "worker_traceback", "seconds",
                                               "cpu_seconds", "started", "finished", "worker")}
    (tmp / "outcome.json").write_text(json.dumps(fields))
