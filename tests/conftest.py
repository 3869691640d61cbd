import os

# One thread per pytest-xdist worker, set before NumPy / torch load their thread pools: with `-n 2` on two cores,
# multi-threaded BLAS and torch in both workers oversubscribe the machine (a 150-step MLP on the digits took 76 s
# instead of a few).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Deterministic, no deadline: Numba compiles on the first call and would trip it.
settings.register_profile(
    "structmat", deadline=None, derandomize=True, max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", deadline=None, max_examples=400)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "structmat"))

# Shapes every family must handle: square, tall, wide, a single row and a single column.
SHAPES = [(24, 24), (40, 17), (13, 36), (1, 9), (9, 1)]


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test: small tensors are fastest that way (two OpenMP threads crawl on a shared
    machine), and a child process on one thread then does identical arithmetic."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------ the fuzz suite's tally (tests/fuzz/outcomes.py)
_FUZZ_TALLY: dict = {}


def pytest_runtest_logreport(report):
    """Count the fuzz outcomes recorded on each test's report (this also runs in the xdist controller)."""
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == "fuzz_outcome":
            area, kind = value
            if kind == "defect" and hasattr(report, "wasxfail"):
                kind = "known (xfail)"
            _FUZZ_TALLY.setdefault(area, {}).setdefault(kind, 0)
            _FUZZ_TALLY[area][kind] += 1


def pytest_terminal_summary(terminalreporter):
    if not _FUZZ_TALLY or hasattr(terminalreporter.config, "workerinput"):
        return
    kinds = ("clear error", "correct result", "defect", "known (xfail)")
    write = terminalreporter.write_line
    terminalreporter.section("fuzz outcomes")
    write(f"{'area':<22}" + "".join(f"{k:>16}" for k in kinds) + f"{'cases':>10}")
    totals = dict.fromkeys(kinds, 0)
    for area in sorted(_FUZZ_TALLY):
        counts = _FUZZ_TALLY[area]
        for k in kinds:
            totals[k] += counts.get(k, 0)
        write(f"{area:<22}" + "".join(f"{counts.get(k, 0):>16}" for k in kinds) + f"{sum(counts.values()):>10}")
    write(f"{'total':<22}" + "".join(f"{totals[k]:>16}" for k in kinds) + f"{sum(totals.values()):>10}")
