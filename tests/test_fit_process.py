import numpy as np
import pytest

import structmat
from structmat.fit_process import FitTimeoutError, fit_with_timeout


def test_child_fit_equals_in_process_fit(rng):
    W = rng.standard_normal((30, 20))
    timed = fit_with_timeout(W, "lowrank", 0.4, timeout=120, method="svd")
    here = structmat.approximate(W, "lowrank", 0.4, method="svd")
    assert timed.matrix.family == "lowrank" and timed.matrix.nparams == here.nparams and timed.seconds >= 0
    np.testing.assert_allclose(timed.matrix.to_dense(), here.to_dense(), atol=1e-10)


def test_child_errors_come_back_as_themselves(rng):
    with pytest.raises(ValueError, match="smallest"):
        fit_with_timeout(rng.standard_normal((50, 50)), "lowrank", 5, timeout=120)
    with pytest.raises(ValueError, match="unknown family"):
        fit_with_timeout(rng.standard_normal((5, 5)), "wavelet", 0.5, timeout=120)


def test_slow_fit_is_killed(rng):
    with pytest.raises(FitTimeoutError, match="did not finish within"):
        fit_with_timeout(rng.standard_normal((400, 400)), "lowrank", 0.5, timeout=0.2, method="svd")
