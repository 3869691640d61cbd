"""Monarch: the entry formula, padding, the square P L Pᵀ R form of Dao et al. (2022)."""

import numpy as np
import pytest

from structmat.matrices.monarch import Monarch, default_blocks, monarch_nparams


def test_entries_follow_the_formula(rng):
    K, J, t, I, Lr = 3, 4, 2, 5, 2
    R, L = rng.standard_normal((K, J * t, I)), rng.standard_normal((J, Lr, K * t))
    D = Monarch(R, L).to_dense()
    for l in range(Lr):
        for j in range(J):
            for k in range(K):
                for i in range(I):
                    expected = sum(L[j, l, k * t + tau] * R[k, j * t + tau, i] for tau in range(t))
                    assert D[l * J + j, k * I + i] == pytest.approx(expected)


def test_square_rank_one_is_p_l_p_r(rng):
    """n = b², K = J = b, t = 1: M = P L Pᵀ R with P the reshape-transpose permutation (Dao et al. 2022, Sec. 3)."""
    b = 4
    R, L = rng.standard_normal((b, b, b)), rng.standard_normal((b, b, b))
    P = np.eye(b * b)[np.arange(b * b).reshape(b, b).T.ravel()]
    expected = P @ _blockdiag(L) @ P.T @ _blockdiag(R)
    np.testing.assert_allclose(Monarch(R, L).to_dense(), expected, atol=1e-12)


def _blockdiag(blocks):
    b = blocks.shape[1]
    out = np.zeros((len(blocks) * b, len(blocks) * blocks.shape[2]))
    for k, B in enumerate(blocks):
        out[k * b:(k + 1) * b, k * B.shape[1]:(k + 1) * B.shape[1]] = B
    return out


def test_padding_is_cropped_and_counted():
    M = Monarch.random((10, 13), in_blocks=4, out_blocks=3, rank=1, seed=0)
    assert M.shape == (10, 13) and M.R.shape == (4, 3, 4) and M.L.shape == (3, 4, 4)
    assert M.nparams == monarch_nparams((10, 13), 4, 3, 1) == 4 * 3 * (4 + 4)


@pytest.mark.parametrize("R_shape, L_shape, shape, match", [
    ((2, 3, 4), (2, 4, 4), None, "share K, J"),
    ((2, 2, 4), (2, 4, 2), (8, 20), "does not fit"),
    ((2, 2), (2, 4, 2), None, "3-D"),
])
def test_bad_blocks_raise(R_shape, L_shape, shape, match):
    with pytest.raises(ValueError, match=match):
        Monarch(np.ones(R_shape), np.ones(L_shape), shape=shape)


def test_default_blocks_near_square_root():
    assert default_blocks(1024) == 32 and default_blocks(1000) in (25, 40) and default_blocks(17) == 4
    assert default_blocks(1) == 1 and default_blocks(2) == 2
