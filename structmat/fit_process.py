"""Fit a weight matrix in a child process that is stopped after a time limit.

A fit cannot be interrupted from inside Python, and a family whose fit takes minutes on a large matrix would hold
up a study of every family. :func:`fit_with_timeout` writes ``W`` to a temporary ``.npy``, runs
``structmat.approximate`` in a fresh interpreter limited to one BLAS/OpenMP/Numba thread, and reads the result back
from the ``.npz`` the child saves (no pickle crosses the boundary). The child is killed when the time is up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FitTimeoutError", "TimedFit", "fit_with_timeout"]

_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                      "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}
_CHILD = "from structmat.fit_process import _child_main; _child_main()"


class FitTimeoutError(TimeoutError):
    """A fit that did not finish within its time limit."""


@dataclass(frozen=True)
class TimedFit:
    """The fitted matrix and the seconds the fit itself took (measured in the child, start-up excluded)."""

    matrix: object
    seconds: float


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
    import structmat
    from structmat.families import get_family

    get_family(family)  # unknown names fail here, with the list of known ones
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds; got {timeout!r}")
    W = np.ascontiguousarray(W, dtype=np.float64)
    with tempfile.TemporaryDirectory(prefix="structmat-fit-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "W.npy", W, allow_pickle=False)
        if inputs is not None:
            from structmat.approximators.data_aware import as_statistics

            as_statistics(inputs, W.shape[1]).save(tmp / "inputs.npz")
        (tmp / "job.json").write_text(json.dumps({"family": family, "budget": budget, "options": options}))
        env = {**os.environ, **_ONE_THREAD}
        start = time.perf_counter()
        try:
            child = subprocess.run([sys.executable, "-c", _CHILD, str(tmp)], env=env, capture_output=True,
                                   text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FitTimeoutError(f"the {family} fit of a {W.shape[0]}x{W.shape[1]} matrix at budget {budget} did "
                                  f"not finish within {timeout:.0f} s") from None
        outcome = tmp / "outcome.json"
        if not outcome.exists():
            last = (child.stderr.strip().splitlines() or ["no error output"])[-1]
            raise RuntimeError(f"the {family} fit process exited with code {child.returncode}: {last}")
        result = json.loads(outcome.read_text())
        if result["status"] == "error":
            error = {"ValueError": ValueError, "TypeError": TypeError}.get(result["type"], RuntimeError)
            raise error(result["message"])
        M = structmat.load(tmp / "M.npz")
    return TimedFit(M, result.get("seconds", time.perf_counter() - start))


def _child_main() -> None:
    """Entry point of the child process: read the job, fit, save the matrix and the outcome."""
    import structmat

    tmp = Path(sys.argv[1])
    job = json.loads((tmp / "job.json").read_text())
    W = np.load(tmp / "W.npy", allow_pickle=False)
    inputs = structmat.InputStatistics.load(tmp / "inputs.npz") if (tmp / "inputs.npz").exists() else None
    start = time.perf_counter()
    try:
        M = structmat.approximate(W, job["family"], job["budget"], inputs=inputs, **job["options"])
        M.save(tmp / "M.npz")
        outcome = {"status": "ok", "seconds": time.perf_counter() - start}
    except Exception as exc:  # handed to the parent, which raises it there
        outcome = {"status": "error", "type": type(exc).__name__, "message": str(exc)}
    (tmp / "outcome.json").write_text(json.dumps(outcome))
