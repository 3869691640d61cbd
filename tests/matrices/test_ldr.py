"""LDR: the Krylov-product definition with general periodic tridiagonal operators, products, the Toeplitz-like case."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from structmat.approximators.ldr import ldr_from_toeplitz_like
from structmat.matrices.ldr import LDR, shift_operator
from structmat.matrices.toeplitz_like import ToeplitzLike


def reference(M):
    """Σ_k A^k G Hᵀ (Bᵀ)^k with explicit matrix powers (tests only)."""
    A, B = M.operators_dense()
    N = M.size
    total = sum(np.linalg.matrix_power(A, k) @ M.G @ M.H.T @ np.linalg.matrix_power(B.T, k) for k in range(N))
    return total[: M.shape[0], : M.shape[1]]


def test_operator_layout():
    op = np.arange(1, 13, dtype=float).reshape(3, 4)
    A = LDR(op, op, np.ones((4, 1)), np.ones((4, 1))).operators_dense()[0]
    expected = np.diag(op[1]) + np.diag(op[0, 1:], -1) + np.diag(op[2, :-1], 1)
    expected[0, 3], expected[3, 0] = op[0, 0], op[2, 3]  # the two corners
    np.testing.assert_array_equal(A, expected)
    Z = LDR(shift_operator(4, -1.0), op, np.ones((4, 1)), np.ones((4, 1))).operators_dense()[0]
    np.testing.assert_array_equal(Z, np.eye(4, k=-1) - np.eye(4, k=3))


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 5), (24, 24), (40, 17), (13, 36)])
def test_dense_is_the_krylov_sum(shape):
    M = LDR.random(shape, rank=3, operator_noise=0.05, seed=1)
    np.testing.assert_allclose(M.to_dense(), reference(M), rtol=1e-12, atol=1e-12 * np.abs(reference(M)).max())


@settings(max_examples=25)
@given(m=st.integers(1, 50), n=st.integers(1, 50), rank=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_products_match_to_dense(m, n, rank, seed):
    rng = np.random.default_rng(seed)
    M = LDR.random((m, n), rank=rank, operator_noise=0.05, seed=seed)
    D = M.to_dense()
    X, Y = rng.standard_normal((n, 3)), rng.standard_normal((m, 2))
    tol = 1e-11 * max(1.0, np.abs(D).max()) * max(m, n)
    np.testing.assert_allclose(M @ X, D @ X, atol=tol, rtol=0)
    np.testing.assert_allclose(M.T @ Y, D.T @ Y, atol=tol, rtol=0)


def test_toeplitz_like_is_a_special_case():
    T = ToeplitzLike.random((30, 21), rank=3, seed=2)
    L = ldr_from_toeplitz_like(T)
    assert L.nparams == T.nparams + 6 * 30
    np.testing.assert_allclose(L.to_dense(), T.to_dense(), atol=1e-12)


def test_bad_operators_raise():
    with pytest.raises(ValueError, match=r"\(3, N\)"):
        LDR(np.ones((3, 5)), np.ones((3, 4)), np.ones((4, 2)), np.ones((4, 2)))
    with pytest.raises(TypeError, match="real"):
        LDR(np.ones((3, 4), dtype=complex), np.ones((3, 4)), np.ones((4, 2)), np.ones((4, 2)))
