"""Fit a weight matrix in a child process that is stopped after a time limit.

A fit cannot be interrupted from inside Python, and a family whose fit takes minutes on a large matrix would hold
up a study of every family. :func:`fit_with_timeout` runs ``structmat.approximate`` as a task of the execution
layer in a fresh interpreter (:func:`structmat.parallel.child.run_in_child`) limited to one BLAS/OpenMP/Numba
thread: ``W`` goes to it as an ``.npy`` file and the fitted matrix comes back as the bytes of its ``.npz`` (no
pickle crosses the boundary). The child is killed when the time is up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

__all__ = ["FitTimeoutError", "TimedFit", "fit_with_timeout", "fit_task"]


class FitTimeoutError(TimeoutError):
    """A fit that did not finish within its time limit."""


@dataclass(frozen=True)
class TimedFit:
    """The fitted matrix and the seconds the fit itself took (measured in the child, start-up excluded)."""

    matrix: object
    seconds: float


def fit_task(W: np.ndarray, family: str, budget, options: dict, inputs_npz: bytes | None = None) -> dict:
    """The task run in the child: the fitted matrix as ``.npz`` bytes and the seconds the fit took.
    ``inputs_npz`` holds the bytes of an :class:`~structmat.InputStatistics` file (a data-aware fit)."""
    import structmat
    from structmat.parallel import matrix_to_bytes
    from structmat.parallel.tasks import from_file_bytes

    inputs = None if inputs_npz is None else from_file_bytes(inputs_npz, structmat.InputStatistics.load)
    start = time.perf_counter()
    M = structmat.approximate(W, family, budget, inputs=inputs, **options)
    return {"matrix_npz": matrix_to_bytes(M), "seconds": time.perf_counter() - start}


def fit_with_timeout(W, family: str, budget, timeout: float, *, inputs=None, **options) -> TimedFit:
    """``structmat.approximate(W, family, budget, inputs=inputs, **options)`` in a child process, killed after
    ``timeout`` seconds. ``inputs`` (rows or :class:`~structmat.InputStatistics`) crosses as a statistics file.

    Raises
    ------
    FitTimeoutError
        the fit did not finish in time.
    ValueError, TypeError
        the fit raised one (re-raised with the child's message), e.g. a budget below the family's smallest matrix.
    RuntimeError
        the child failed otherwise (its last line of error output is quoted).
    """
    from structmat.families import get_family
    from structmat.parallel import Task, matrix_from_bytes
    from structmat.parallel.child import run_in_child

    get_family(family)  # unknown names fail here, with the list of known ones
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds; got {timeout!r}")
    W = np.ascontiguousarray(W, dtype=np.float64)
    arguments = {"W": W, "family": family, "budget": budget, "options": options}
    if inputs is not None:
        from structmat.approximators.data_aware import as_statistics
        from structmat.parallel.tasks import to_file_bytes

        arguments["inputs_npz"] = to_file_bytes(as_statistics(inputs, W.shape[1]))
    task = Task(fit_task, arguments)
    result = run_in_child(0, task, timeout, threads=1)
    if result.status == "timed out":
        raise FitTimeoutError(f"the {family} fit of a {W.shape[0]}x{W.shape[1]} matrix at budget {budget} did "
                              f"not finish within {timeout:.0f} s")
    if result.status != "ok":
        error = {"ValueError": ValueError, "TypeError": TypeError}.get(result.error_type, RuntimeError)
        raise error(result.message)
    return TimedFit(matrix_from_bytes(result.value["matrix_npz"]), result.value["seconds"])
