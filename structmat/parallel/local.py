"""Run tasks in this process, or on a local pool of worker processes (loky, through joblib).

Why loky rather than ``concurrent.futures.ProcessPoolExecutor``: loky is the process pool behind joblib and
scikit-learn's ``n_jobs`` (already installed with scikit-learn); it starts workers as fresh interpreters (no
``fork`` of a parent that holds OpenMP, Numba or torch threads), takes the environment the workers start with (so
BLAS, OpenMP and Numba read their one-thread settings before they are imported), and reports a worker that died
with its exit code or signal instead of hanging. A dead worker breaks any process pool, loky's included: every task
in flight at that moment fails with it. :func:`run_processes` therefore starts a new pool and re-runs them, first
one at a time so that a task that kills its worker again (out of memory, say) is known for certain; a task whose
worker dies ``max_worker_deaths`` times while it runs alone is reported ``"lost"``. Tasks that finished are never
run again. Scripts that use the pool need the ``if __name__ == "__main__":`` guard, as with any pool whose
workers are fresh interpreters.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

from structmat.parallel.child import run_task
from structmat.parallel.tasks import Task, TaskResult, thread_environment

__all__ = ["WorkItem", "run_serial", "run_processes"]

logger = logging.getLogger(__name__)

#: Idle seconds after which a pool worker exits; until then the next grid reuses it (no start-up, imports done).
IDLE_SECONDS = 60


#: loky's warning when a pool worker exits while tasks wait (see :func:`quiet_worker_restarts`).
WORKER_STOPPED_WARNING = "A worker stopped while some jobs were given to the executor"


def quiet_worker_restarts() -> None:
    """Ignore loky's ``WORKER_STOPPED_WARNING``. loky gives it when a worker that reached its idle timeout exits just
    as new tasks arrive, and starts a replacement itself; a worker that dies mid-task reaches
    :func:`run_processes` as ``BrokenProcessPool`` and is handled there. The warning only alarmed users of
    ``structmat demo``, which leaves the pool idle while it fine-tunes."""
    warnings.filterwarnings("ignore", message=WORKER_STOPPED_WARNING, category=UserWarning)


@dataclass(frozen=True)
class WorkItem:
    """A task with its position in the grid and its separately sent arrays (name to array, path or future)."""

    index: int
    task: Task
    arrays: Mapping | None = None

    @property
    def key(self) -> tuple:
        return self.task.key if self.task.key is not None else (self.index,)


def run_serial(items: Iterable[WorkItem], *, threads, time_limit) -> Iterator[TaskResult]:
    """One task after the other, in this process (a task with a time limit in a child process)."""
    for item in items:
        yield run_task(item.index, item.task, threads, time_limit, item.arrays)


def lost_result(item: WorkItem, deaths: int, reason: str, attempts: int | None = None) -> TaskResult:
    return TaskResult(index=item.index, key=item.key, status="lost", error_type="WorkerDied",
                      attempts=deaths if attempts is None else attempts,
                      message=f"the worker process running it died {deaths} times ({reason})")


def _death_reason(exc: BaseException) -> str:
    """What loky says about a dead worker, short: its exit code or signal, e.g. "exit code SIGKILL(-9)"."""
    text = str(exc)
    codes = re.search(r"exit codes of the workers are \{([^}]*)\}", text)
    if codes:
        return f"exit code {codes.group(1)}; a signal such as SIGKILL often means the machine ran out of memory"
    lines = text.strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def run_processes(items: Iterable[WorkItem], *, jobs: int, threads, time_limit,
                  max_worker_deaths: int = 3) -> Iterator[TaskResult]:
    """Tasks on a pool of ``jobs`` loky worker processes, yielded as they finish (see the module docstring).

    At most ``jobs`` tasks are handed to the pool at a time, so the tasks in flight are exactly the running ones
    and a worker's death is charged to the right tasks. The pool is loky's reusable one: a following grid with the
    same ``jobs`` and ``threads`` finds its workers started and their imports done.
    """
    from joblib.externals.loky import get_reusable_executor

    pending = deque(items)
    suspects: deque[WorkItem] = deque()   # in flight when a worker died: re-run one at a time
    attempts: Counter = Counter()
    deaths: Counter = Counter()
    suspect_indices: set[int] = set()
    in_flight: dict = {}
    executor = None
    try:
        while pending or suspects or in_flight:
            if executor is None:
                quiet_worker_restarts()
                executor = get_reusable_executor(max_workers=jobs, env=thread_environment(threads),
                                                 timeout=IDLE_SECONDS)
            isolating = bool(suspects) or any(item.index in suspect_indices for item in in_flight.values())
            queue, width = (suspects, 1) if suspects else (pending, 1 if isolating else jobs)
            while queue and len(in_flight) < width:
                item = queue.popleft()
                attempts[item.index] += 1
                in_flight[executor.submit(run_task, item.index, item.task, threads, time_limit, item.arrays)] = item
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            lost, reason = [], ""
            for future in done:
                item = in_flight.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool as exc:
                    lost.append(item)
                    reason = _death_reason(exc)
                    continue
                yield dataclasses.replace(result, attempts=attempts[item.index])
            if not lost:
                continue
            for future, item in list(in_flight.items()):  # the pool is broken: every other future ends now too
                try:
                    result = future.result()
                except BrokenProcessPool:
                    lost.append(item)
                    continue
                yield dataclasses.replace(result, attempts=attempts[item.index])
            in_flight.clear()
            executor.shutdown(wait=True, kill_workers=True)
            executor = None
            if len(lost) > 1:
                logger.warning("a worker process died (%s) with %d tasks running; re-running them one at a time",
                               reason, len(lost))
                suspects.extend(sorted(lost, key=lambda item: item.index))
                suspect_indices.update(item.index for item in lost)
                continue
            (item,) = lost
            deaths[item.index] += 1
            if deaths[item.index] >= max_worker_deaths:
                logger.warning("task %s: its worker died %d times; giving up on it", item.key, deaths[item.index])
                yield lost_result(item, deaths[item.index], reason, attempts[item.index])
            else:
                logger.warning("task %s: its worker died (%s); running it again", item.key, reason)
                suspects.appendleft(item)
                suspect_indices.add(item.index)
    finally:
        if in_flight and executor is not None:  # interrupted, or stopped on an error: abandon what still runs
            executor.shutdown(wait=False, kill_workers=True)
