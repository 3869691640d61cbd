"""The check the sparse kernel tests share: the C product of a matrix against its dense float32 product."""

import numpy as np

from structmat.speed_c import time_c


def check(M, driver, tmp_path, rng):
    """``y = M x`` from the C driver for a random ``x``, asserted equal to the dense product; returns ``y``."""
    x = rng.standard_normal(M.shape[1])
    y = time_c(M, x, binary=driver, work_dir=tmp_path, warmup=0, repeats=1, min_sample_ns=0)["output"]
    expected = M.astype(np.float32).to_dense().astype(np.float64) @ x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    return y
