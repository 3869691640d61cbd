import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

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
