"""Tasks of a grid: a function named by its import path, plain arguments, and what running one returns.

A :class:`Task` names a module-level function (``"package.module:function"``) instead of holding it, so that a
worker imports the code it runs rather than unpickling it, and it carries only plain data: JSON values (str, int,
float, bool, None, lists and dicts of them), NumPy arrays and bytes. A fitted model never travels as a Python
object: a task that produces a matrix returns it as the bytes of its ``.npz`` file (:func:`matrix_to_bytes`).

:func:`execute` runs one task where it is called (the parent, a pool worker, a Dask worker or a child process):
it limits BLAS, OpenMP, torch and Numba to ``threads`` threads, times the call, and turns an exception into a
:class:`TaskResult` with ``status="error"`` so that one failing cell reports instead of tearing a run down.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import numbers
import os
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["Task", "TaskResult", "execute", "resolve_function", "limit_threads", "matrix_to_bytes",
           "matrix_from_bytes", "STATUSES"]

#: ``ok``: the function returned; ``error``: it raised; ``timed out``: it ran past its time limit and was killed;
#: ``lost``: the worker running it died (killed, out of memory) more often than the run allows.
STATUSES = ("ok", "error", "timed out", "lost")

_SCALARS = (str, bool, type(None))


def _function_path(function) -> str:
    """``"module:qualname"`` of a module-level callable, checked to import back to the same object."""
    if isinstance(function, str):
        module, sep, name = function.partition(":")
        if not sep or not module or not name:
            raise ValueError(f"a task function must be 'package.module:function' or a module-level function; "
                             f"got {function!r}")
        return function
    if not callable(function):
        raise TypeError(f"a task function must be a callable or a 'package.module:function' string; "
                        f"got {type(function).__name__}")
    module, name = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    if module is None or "<" in name or module == "__main__":
        raise ValueError(f"a task function must be importable by workers (defined at the top level of an "
                         f"installed module, not a lambda, a closure or __main__); got {function!r}")
    return f"{module}:{name}"


def resolve_function(path: str) -> Callable:
    """Import the function named ``"package.module:qualname"``."""
    module_name, _, name = path.partition(":")
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import {module_name!r} for task function {path!r} on host "
                          f"{socket.gethostname()}: {exc} (is structmat installed where the task runs?)") from exc
    for part in name.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ImportError(f"module {module_name!r} has no {name!r} (task function {path!r})")
    return target


def _check_value(value, where: str, *, top: bool) -> None:
    """Accept JSON values everywhere, and arrays or bytes at the top level of a mapping."""
    if isinstance(value, (*_SCALARS, numbers.Real)):
        return
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":  # NumPy scalars, np.bool_ included
        return
    if top and isinstance(value, (np.ndarray, bytes)):
        if isinstance(value, np.ndarray) and value.dtype.kind not in "biufc":
            raise TypeError(f"{where} is an array of dtype {value.dtype}; only numeric and boolean arrays are "
                            "accepted (object arrays would need pickle)")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", top=False)
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}; keys must be str")
            _check_value(item, f"{where}[{k!r}]", top=False)
        return
    raise TypeError(f"{where} is a {type(value).__name__}; tasks carry JSON values (str, int, float, bool, None, "
                    "lists, dicts), NumPy arrays or bytes, never Python objects (save a model to a file or "
                    "to bytes and pass that)")


def check_mapping(values: Mapping, what: str) -> dict:
    """``values`` as a plain dict after checking every value is something a task may carry."""
    if not isinstance(values, Mapping):
        raise TypeError(f"{what} must be a mapping of str to values; got {type(values).__name__}")
    for key, value in values.items():
        if not isinstance(key, str):
            raise TypeError(f"{what} has a key {key!r} of type {type(key).__name__}; keys must be str")
        _check_value(value, f"{what}[{key!r}]", top=True)
    return dict(values)


@dataclass(frozen=True)
class Task:
    """One cell of a grid: ``function(**arguments)`` returning a dict (one row).

    Parameters
    ----------
    function : str or callable
        ``"package.module:function"``, or a module-level function (stored as that string). Workers import it, so
        it must live in an installed module.
    arguments : mapping of str to JSON values, arrays or bytes
        Keyword arguments. Large arrays shared by many tasks are sent once per worker process or cluster, not once
        per task.
    key : tuple, optional
        What identifies the cell in messages and in a :class:`~structmat.parallel.output.ResumableTable`; by
        default its position in the task list.
    time_limit : float, optional
        Seconds after which this task is killed (overrides ``run_grid``'s ``time_limit``).
    """

    function: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    key: tuple | None = None
    time_limit: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "function", _function_path(self.function))
        object.__setattr__(self, "arguments", check_mapping(self.arguments, "task arguments"))
        if self.key is not None and not isinstance(self.key, tuple):
            object.__setattr__(self, "key", (self.key,))
        if self.time_limit is not None:
            check_time_limit(self.time_limit)


def check_time_limit(time_limit) -> float:
    if isinstance(time_limit, bool) or not isinstance(time_limit, numbers.Real) or not time_limit > 0 \
            or math.isinf(time_limit):
        raise ValueError(f"time_limit must be a finite number of seconds > 0; got {time_limit!r}")
    return float(time_limit)


@dataclass(frozen=True)
class TaskResult:
    """What became of one task.

    ``value`` is the dict the function returned (``status == "ok"``), else None; ``error_type``, ``message`` and
    ``worker_traceback`` describe a failure. ``seconds``/``cpu_seconds`` are the function's own wall and CPU time
    on the worker; ``started``/``finished`` are its wall-clock (``time.time()``) bounds there, and ``worker`` is
    ``"pid@host"``. ``attempts`` counts the runs, more than 1 when a worker died under it.
    """

    index: int
    key: tuple
    status: str
    value: dict | None = None
    error_type: str = ""
    message: str = ""
    worker_traceback: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    worker: str = ""
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def thread_environment(threads: int | None) -> dict[str, str]:
    """Environment variables that hold every threading library to ``threads`` threads in a new process, read
    before the libraries are imported (Numba reads NUMBA_NUM_THREADS only then); none for ``threads=None``."""
    if threads is None:
        return {}
    value = str(threads)
    return {name: value for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                     "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}


@contextlib.contextmanager
def limit_threads(threads: int | None):
    """Hold BLAS/OpenMP (threadpoolctl), torch and Numba, where already imported, to ``threads`` threads
    (``None``: leave them as they are)."""
    from threadpoolctl import threadpool_limits

    if threads is None:
        yield
        return
    torch = sys.modules.get("torch")
    numba = sys.modules.get("numba")
    previous_torch = torch.get_num_threads() if torch is not None else None
    previous_numba = None
    if numba is not None and threads <= numba.config.NUMBA_NUM_THREADS:
        previous_numba = numba.get_num_threads()
        numba.set_num_threads(threads)
    with threadpool_limits(limits=threads):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(previous_torch)
            if previous_numba is not None:
                numba.set_num_threads(previous_numba)


def worker_name() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def execute(index: int, task: Task, threads: int | None = 1, arrays: Mapping | None = None) -> TaskResult:
    """Run ``task`` here on ``threads`` threads and report what happened (never raises for the task's errors).

    ``arrays`` holds values for arguments the caller sent separately (shared arrays, see ``run_grid``): each is an
    array, or a path to an ``.npy`` file read here.
    """
    key = task.key if task.key is not None else (index,)
    start_wall, start, start_cpu = time.time(), time.perf_counter(), time.process_time()
    common = dict(index=index, key=key, worker=worker_name(), started=start_wall)
    try:
        arguments = dict(task.arguments)
        arguments.update(read_shared(arrays))
        function = resolve_function(task.function)
        with limit_threads(threads):
            value = function(**arguments)
        if not isinstance(value, Mapping):
            raise TypeError(f"task function {task.function} must return a dict (one row); "
                            f"got {type(value).__name__}")
        value = check_mapping(value, f"the value returned by {task.function}")
    except Exception as exc:  # reported in the result; the caller decides whether it is fatal
        return TaskResult(**common, status="error", error_type=type(exc).__name__, message=str(exc),
                          worker_traceback=traceback.format_exc(), seconds=time.perf_counter() - start,
                          cpu_seconds=time.process_time() - start_cpu, finished=time.time())
    return TaskResult(**common, status="ok", value=value, seconds=time.perf_counter() - start,
                      cpu_seconds=time.process_time() - start_cpu, finished=time.time())


def to_file_bytes(obj, suffix: str = ".npz") -> bytes:
    """The bytes of the file ``obj.save(path)`` writes: how a task carries a saved object (no pickle)."""
    with tempfile.TemporaryDirectory(prefix="structmat-bytes-") as tmp:
        path = Path(tmp) / f"object{suffix}"
        obj.save(path)
        return path.read_bytes()


def from_file_bytes(data: bytes, load: Callable, suffix: str = ".npz"):
    """``load(path)`` of a file holding ``data`` (the inverse of :func:`to_file_bytes`)."""
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"expected the bytes of a {suffix} file; got {type(data).__name__}")
    with tempfile.TemporaryDirectory(prefix="structmat-bytes-") as tmp:
        path = Path(tmp) / f"object{suffix}"
        path.write_bytes(bytes(data))
        return load(path)


def read_shared(values: Mapping | None) -> dict:
    """Values sent apart from their tasks (see ``run_grid``), read: a ``.npy`` path is an array, a ``.bin`` path
    bytes; anything else (already delivered, as by Dask) is the value itself."""
    out = {}
    for name, value in (values or {}).items():
        if isinstance(value, (str, Path)):
            value = np.load(value, allow_pickle=False) if str(value).endswith(".npy") else Path(value).read_bytes()
        out[name] = value
    return out


def matrix_to_bytes(M) -> bytes:
    """The bytes of ``M.save(...)``'s ``.npz`` file: how a task returns a fitted matrix (no pickle)."""
    return to_file_bytes(M)


def matrix_from_bytes(data: bytes):
    """The matrix whose ``.npz`` bytes :func:`matrix_to_bytes` returned, read back by ``structmat.load``."""
    from structmat.matrices.io import load

    return from_file_bytes(data, load)


def to_json_ready(values: Mapping) -> tuple[dict, dict, dict]:
    """Split a checked mapping into (JSON-ready values, arrays, bytes) for files a child process reads."""
    plain, arrays, blobs = {}, {}, {}
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            arrays[name] = value
        elif isinstance(value, bytes):
            blobs[name] = value
        else:
            plain[name] = value
    json.dumps(plain, default=_json_default)  # fail here, with the name, rather than in the child
    return plain, arrays, blobs


def _json_default(value):
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
