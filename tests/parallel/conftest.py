import logging
import os

import pytest


@pytest.fixture(scope="session")
def dask_client():
    """A real two-worker ``LocalCluster`` (one thread each), shared by the tests that only need some cluster."""
    distributed = pytest.importorskip("distributed")
    from structmat.parallel.tasks import thread_environment

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=logging.ERROR, env=thread_environment(1)) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def worker_pids(client) -> list[int]:
    return sorted(client.run(os.getpid).values())


def loky_worker_pids() -> list[int]:
    """The loky pool's worker processes among this process's children."""
    import psutil

    pids = []
    for child in psutil.Process().children(recursive=True):
        try:
            if any("LokyProcess" in part for part in child.cmdline()):
                pids.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return sorted(pids)
