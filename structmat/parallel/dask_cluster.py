"""Run tasks on a ``dask.distributed`` cluster: a scheduler address, a ``Client``, or a ``LocalCluster`` started here.

Dask is an optional dependency (``pip install structmat[dask]``), imported only when a run asks for it. Each task
is one ``client.submit`` of :func:`structmat.parallel.child.run_task`; the scheduler places and balances them, and
results come back with ``as_completed``. When a worker dies mid-task, the scheduler runs its tasks again elsewhere;
a task whose workers died ``distributed.scheduler.allowed-failures`` + 1 times (3 + 1 by default) comes back as
``KilledWorker`` and is reported ``"lost"``. Arrays of 1 MiB or more that several tasks share are scattered to the
cluster once (``client.scatter``) instead of travelling with every task.

Workers need structmat (same version) and the data the tasks name by path (a feature cache, a weight file): a
shared file system or the same files on every machine. Results travel back to the client, which writes them, so
outputs need no shared file system.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Iterable, Iterator

from structmat.parallel.child import run_task
from structmat.parallel.local import WorkItem, lost_result
from structmat.parallel.tasks import TaskResult, thread_environment

__all__ = ["DASK_HINT", "import_distributed", "run_dask"]

logger = logging.getLogger(__name__)

DASK_HINT = "install the optional Dask dependencies: pip install 'structmat[dask]' (dask and distributed)"


def import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"running on Dask needs dask.distributed, which is not installed; {DASK_HINT}") from exc
    return distributed


@contextlib.contextmanager
def dask_client(target, *, jobs: int, threads):
    """A connected ``Client``: ``target`` itself, a new one to the address ``target``, or (``"local"``) one to a
    ``LocalCluster`` of ``jobs`` single-threaded worker processes that is closed on exit."""
    distributed = import_distributed()
    if isinstance(target, distributed.Client):
        yield target
        return
    with contextlib.ExitStack() as stack:
        if not logger.isEnabledFor(logging.DEBUG):  # the in-process scheduler logs every worker at INFO
            distributed_logger = logging.getLogger("distributed")
            stack.callback(distributed_logger.setLevel, distributed_logger.level)
            distributed_logger.setLevel(logging.WARNING)
        if target == "local":
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=":0",
                silence_logs=logging.ERROR, env=thread_environment(threads)))
            client = stack.enter_context(distributed.Client(cluster))
        else:
            try:
                client = stack.enter_context(distributed.Client(target, timeout="30s"))
            except OSError as exc:
                raise ConnectionError(f"cannot reach a Dask scheduler at {target!r} ({exc}); expected the address "
                                      "`dask scheduler` prints, such as tcp://10.0.0.5:8786") from exc
        yield client


def _check_workers(client) -> None:
    """Every worker must import this structmat: asked through the standard library, which any worker can unpickle."""
    import importlib.metadata

    import structmat

    client.wait_for_workers(1, timeout=120)
    versions = client.run(importlib.metadata.version, "structmat", on_error="return")
    bad = {address: (v if isinstance(v, str) else "not installed") for address, v in versions.items()
           if v != structmat.__version__}
    if bad:
        raise ImportError(f"every Dask worker needs structmat {structmat.__version__} installed; these have "
                           f"{bad}")
    threaded = {address: n for address, n in client.nthreads().items() if n > 1}
    if threaded:
        logger.warning("Dask workers %s run %s threads each: tasks then share a process and their fit times "
                       "are not one-core times; start workers with --nthreads 1", sorted(threaded),
                       sorted(set(threaded.values())))


def run_dask(items: Iterable[WorkItem], *, target, jobs: int, threads, time_limit) -> Iterator[TaskResult]:
    """Tasks on a Dask cluster, yielded as they finish (see the module docstring)."""
    distributed = import_distributed()
    items = list(items)
    with dask_client(target, jobs=jobs, threads=threads) as client:
        _check_workers(client)
        scattered: dict[int, object] = {}
        futures = {}
        run_id = uuid.uuid4().hex[:12]
        try:
            for item in items:
                arrays = {}
                for name, array in (item.arrays or {}).items():
                    if id(array) not in scattered:
                        scattered[id(array)] = client.scatter(array, hash=False)
                    arrays[name] = scattered[id(array)]
                future = client.submit(run_task, item.index, item.task, threads, time_limit, arrays,
                                       key=f"structmat-task-{run_id}-{item.index}", pure=False)
                futures[future] = item
            for future in distributed.as_completed(futures):
                item = futures[future]
                try:
                    yield future.result()
                except distributed.KilledWorker as exc:
                    yield lost_result(item, _allowed_failures() + 1, str(exc))
                future.release()
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()


def _allowed_failures() -> int:
    import dask

    return int(dask.config.get("distributed.scheduler.allowed-failures"))
