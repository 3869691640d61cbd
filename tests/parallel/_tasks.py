"""Task functions for the parallel tests (workers import them from here)."""

import os
import signal
import time
from pathlib import Path

import numpy as np


def square(x, pause=0.0):
    time.sleep(pause)
    return {"x": x, "square": x * x, "pid": os.getpid()}


def array_sum(values, scale=1.0):
    return {"sum": float(np.sum(values) * scale), "first": values[:3].copy(), "blob": b"abc"}


def fail(message):
    raise ValueError(message)


def sleep(seconds):
    time.sleep(seconds)
    return {"slept": seconds}


def die_once(marker, x):
    """Kill this worker process the first time (as the out-of-memory killer would), return the second time."""
    marker = Path(marker)
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return {"x": x, "pid": os.getpid()}


def always_die():
    os.kill(os.getpid(), signal.SIGKILL)


def threads_seen():
    from threadpoolctl import threadpool_info

    return {"blas": [info["num_threads"] for info in threadpool_info()], "omp": os.environ.get("OMP_NUM_THREADS")}


def not_a_row():
    return [1, 2]


def bytes_size(blob, start=0):
    return {"size": len(blob), "head": blob[start:start + 4]}
