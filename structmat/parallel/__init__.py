"""Run a grid of independent tasks serially, on a local process pool, or on a Dask cluster, with the same results.

Everything structmat does at scale is a grid of independent cells (a sweep's matrices × families × budgets, a
model's layers × families × budgets, a head study's families): one cell → one row. This package runs such a grid:

- a :class:`Task` names a module-level function (``"package.module:function"``, imported by the worker, never
  pickled) and carries plain arguments: JSON values, NumPy arrays and bytes — file paths or arrays, never models;
- :func:`run_grid` runs the tasks and yields a :class:`TaskResult` per task *as it finishes*; ``result.value`` is the
  dict (the row) the function returned, ``result.index`` the task's position in the grid;
- the parent writes the output: a :class:`ResumableTable` keeps the rows in the grid's canonical order and rewrites
  its CSV or JSON atomically after every row, so completion order does not change the file, an interrupted run
  loses nothing, and a re-run skips finished cells.

Where tasks run (``executor=``, ``jobs=``):

``"serial"`` (``jobs=1``)
    In this process, one after the other.
``"processes"`` (``jobs > 1``; ``jobs=-1`` is one per CPU)
    A local pool of loky worker processes (joblib's, see :mod:`structmat.parallel.local` for why).
``"dask:local"``, ``"dask:tcp://host:8786"`` or a ``dask.distributed.Client``
    A Dask ``LocalCluster`` of ``jobs`` workers, an existing scheduler, or an existing client
    (``pip install structmat[dask]``; imported only then).

Guarantees, whatever the executor:

- each task runs with BLAS, OpenMP, torch and Numba held to ``threads`` threads (1 by default), so ``jobs``
  workers use ``jobs`` cores and fit times stay one-core times;
- a task with a time limit (``time_limit=`` or ``Task.time_limit``) runs in a child process killed when the time
  is up (status ``"timed out"``);
- a task that raises comes back with status ``"error"`` (with ``errors="raise"``, the default, :class:`TaskError`
  stops the run); a worker that dies mid-task (killed, out of memory) costs only a re-run — the local pool
  restarts and re-runs the tasks that were in flight, Dask reschedules them — and a task that keeps killing its
  worker comes back ``"lost"``;
- results are the same bytes as a serial run: tasks are deterministic functions of their arguments (seeds are
  arguments), run on one thread each, and the parent writes rows in canonical order. Only measured times differ.

Example (a grid of one function over budgets, two worker processes, a resumable CSV)::

    from structmat.parallel import ResumableTable, Task, run_grid

    # in an installed module, e.g. mypackage/cells.py:
    #     def fit_cell(W, family, budget):
    #         M = structmat.approximate(W, family, budget)
    #         return {"family": family, "budget": budget, "error": structmat.relative_error(W, M)}
    cells = [("lowrank", b) for b in (0.1, 0.25, 0.5)]
    table = ResumableTable("grid.csv", ["family", "budget", "error"], ["family", "budget"], order=cells)
    tasks = [Task("mypackage.cells:fit_cell", {"W": W, "family": f, "budget": b}, key=(f, b))
             for f, b in cells if not table.done((f, b))]
    for result in run_grid(tasks, jobs=2):
        table.add(result.value)

A fitted matrix travels back as the bytes of its ``.npz`` file: return ``matrix_to_bytes(M)`` as a value, and read
it in the parent with :func:`matrix_from_bytes` (or write the bytes to a file).
"""

from structmat.parallel.grid import SHARE_BYTES, TaskError, check_jobs, default_jobs, describe_executor, run_grid
from structmat.parallel.output import ResumableTable
from structmat.parallel.tasks import STATUSES, Task, TaskResult, matrix_from_bytes, matrix_to_bytes

__all__ = [
    "Task", "TaskResult", "TaskError", "run_grid", "ResumableTable", "matrix_to_bytes", "matrix_from_bytes",
    "default_jobs", "check_jobs", "describe_executor", "STATUSES", "SHARE_BYTES",
]
