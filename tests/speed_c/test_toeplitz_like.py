"""The Toeplitz-like C kernel: radix-2 FFTs of the zero-padded linear convolutions, against NumPy; its checks."""

import numpy as np
import pytest

from structmat.matrices.toeplitz_like import ToeplitzLike
from structmat.speed_c import LayerFileError, run_driver, time_c, write_input
from structmat.speed_c.layer_format import layer_bytes
from structmat.speed_c.runner import TOLERANCE
from structmat.speed_c.writers import WRITERS


@pytest.mark.parametrize("shape, rank", [((1000, 1280), 8), ((300, 517), 5), ((64, 64), 1), ((2, 1), 1),
                                         ((257, 256), 7)])
def test_toeplitz_like_matches_numpy(shape, rank, driver, rng, tmp_path):
    """Odd and even ranks (the pairing of generators), N a power of two or not, L = 2N exactly or more."""
    M = ToeplitzLike.random(shape, rank=rank, seed=rank)
    x = rng.standard_normal(shape[1])
    y = time_c(M, x, binary=driver, work_dir=tmp_path, warmup=0, repeats=1)["output"]
    expected = M.to_dense() @ x
    assert np.linalg.norm(y - expected) <= 2 * TOLERANCE * np.linalg.norm(expected)


@pytest.mark.parametrize("meta, message", [([30, 2], "N must be max(m, n) = 20"), ([20, 0], "rank must be in"),
                                           ([20, 3], "array 0 (G^T)")])
def test_toeplitz_like_metadata_errors(meta, message, driver, tmp_path):
    M = ToeplitzLike.random((20, 12), rank=2, seed=0)
    _, arrays = WRITERS["toeplitz_like"].layout(M)
    path = tmp_path / "bad.smlayer"
    path.write_bytes(layer_bytes(WRITERS["toeplitz_like"].family_id, M.shape, meta,
                                 [np.asarray(a, dtype=np.float32) for a in arrays]))
    with pytest.raises(LayerFileError, match="not a valid toeplitz_like layer") as exc:
        run_driver(driver, path, write_input(np.ones(12), tmp_path / "x.f32"), warmup=0, repeats=1)
    assert message in str(exc.value)
