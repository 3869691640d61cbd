"""How many threads structmat's fits and commands use: one, unless asked otherwise.

A fit (every ``fit_<family>`` and :func:`structmat.approximate`) runs with its BLAS/OpenMP pools (through
threadpoolctl) and torch's intra-op pool limited to ``threads`` threads, by default :func:`default_threads`: 1, or
the ``STRUCTMAT_THREADS`` environment variable. The Numba kernels are serial whatever the setting. Why one:

- on a machine that is busy, extra threads wait for each other: on the shared 2-core machine the library is
  developed on, the low-rank fit of a 1000x1280 classifier took 1.7 s on one thread and 15.5 s on two, a HODLR fit
  4.0 s against 19.5 s (``structmat bench-threads``; ``docs/benchmarks/reliability.md``);
- BLAS reductions split over a different number of threads round differently, so one thread is also what makes a
  fit give the same bytes on every machine;
- to use more cores, run independent fits side by side (sweeps do), or pass ``threads=`` when the machine is yours.

The command line sets the same limit for a whole command (``--threads``, default 1).
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers
import os
import sys

__all__ = ["THREADS_ENV", "default_threads", "check_threads", "limit_threads", "current_threads",
           "process_threads"]

#: Environment variable that changes the default number of threads.
THREADS_ENV = "STRUCTMAT_THREADS"
#: Environment variables read by BLAS, OpenMP, Numba and torch when they load (set for the whole process by
#: :func:`process_threads`, so libraries loaded later and child processes follow the limit too).
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                     "NUMEXPR_NUM_THREADS")

_current: contextvars.ContextVar[int | None] = contextvars.ContextVar("structmat_threads", default=None)


def check_threads(value, name: str = "threads") -> int:
    """Check a thread count: an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= 1; got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value}")
    return int(value)


def default_threads() -> int:
    """Threads per fit when none is given: ``$STRUCTMAT_THREADS`` if set, else 1."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return 1
    try:
        return check_threads(int(text), THREADS_ENV)
    except (TypeError, ValueError):
        raise ValueError(f"the environment variable {THREADS_ENV} must be an int >= 1; got {text!r}") from None


def current_threads() -> int:
    """The limit in force (inside :func:`limit_threads`), else :func:`default_threads`."""
    value = _current.get()
    return default_threads() if value is None else value


_controller = None
_controller_libraries = -1


def _threadpools():
    """A threadpoolctl controller over the native libraries loaded so far (rebuilt when more have loaded)."""
    global _controller, _controller_libraries
    from threadpoolctl import ThreadpoolController

    loaded = len(sys.modules)
    if _controller is None or loaded != _controller_libraries:
        _controller, _controller_libraries = ThreadpoolController(), loaded
    return _controller


@contextlib.contextmanager
def limit_threads(threads: int | None = None):
    """Run the block with at most ``threads`` BLAS/OpenMP and torch threads (default: :func:`current_threads`).

    Nested limits apply the innermost; the previous settings come back on exit. torch is limited only when it is
    already imported (this never imports it); a fit that imports torch itself calls ``limit_threads()`` again.
    """
    threads = current_threads() if threads is None else check_threads(threads)
    token = _current.set(threads)
    torch = sys.modules.get("torch")
    previous_torch = torch.get_num_threads() if torch is not None else None
    try:
        with _threadpools().limit(limits=threads):
            if torch is not None and previous_torch != threads:
                torch.set_num_threads(threads)
            yield threads
    finally:
        if torch is not None and torch.get_num_threads() != previous_torch:
            torch.set_num_threads(previous_torch)
        _current.reset(token)


@contextlib.contextmanager
def process_threads(threads: int):
    """Limit this whole process (and the child processes it starts) to ``threads`` threads for the duration of the
    block: the environment variables libraries read when they load, the pools already loaded, torch if imported
    (or once it is: through the environment), and the default of every fit. Everything is restored on exit. The
    command line runs each command inside it."""
    threads = check_threads(threads)
    saved = {name: os.environ.get(name) for name in (THREADS_ENV, *_THREAD_VARIABLES)}
    torch = sys.modules.get("torch")
    previous_torch = torch.get_num_threads() if torch is not None else None
    for name in saved:
        os.environ[name] = str(threads)
    try:
        with _threadpools().limit(limits=threads):
            if torch is not None:
                torch.set_num_threads(threads)
            yield threads
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(previous_torch if previous_torch is not None else _torch_default())


def _torch_default() -> int:
    """torch's own default when it was first imported inside :func:`process_threads` (its CPU count)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
