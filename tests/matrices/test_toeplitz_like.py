"""ToeplitzLike: the inversion formula, the displacement, FFT products against to_dense, files."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from structmat.matrices._toeplitz_like_kernels import _adjoint, _assemble
from structmat.matrices.toeplitz_like import ToeplitzLike, tau


def f_circulant(v, f):
    """Z_f(v) built entry by entry: v[i-j] on and below the diagonal, f v[n+i-j] above."""
    n = len(v)
    return np.array([[v[i - j] if i >= j else f * v[n + i - j] for j in range(n)] for i in range(n)])


def shift(n, f):
    """Z_f: ones on the subdiagonal, f at (0, n-1) ([[f]] for n = 1)."""
    Z = np.eye(n, k=-1)
    Z[0, n - 1] += f
    return Z


@pytest.mark.parametrize("N", [1, 2, 7, 16])
def test_matrix_is_the_inversion_formula_and_has_the_displacement(N):
    rng = np.random.default_rng(N)
    G, H = rng.standard_normal((N, 3)), rng.standard_normal((N, 3))
    M = ToeplitzLike(G, H)
    expected = 0.5 * sum(f_circulant(G[:, j], 1) @ f_circulant(H[::-1, j], -1) for j in range(3))
    np.testing.assert_allclose(M.to_dense(), expected, atol=1e-12)
    D = shift(N, 1) @ expected - expected @ shift(N, -1)
    np.testing.assert_allclose(D, G @ H.T, atol=1e-12)
    np.testing.assert_allclose(M.displacement(), G @ H.T, atol=1e-12)


def test_rectangular_is_the_top_left_block():
    rng = np.random.default_rng(0)
    G, H = rng.standard_normal((12, 2)), rng.standard_normal((12, 2))
    square = ToeplitzLike(G, H).to_dense()
    np.testing.assert_array_equal(ToeplitzLike(G, H, shape=(5, 12)).to_dense(), square[:5])
    np.testing.assert_array_equal(ToeplitzLike(G, H, shape=(12, 7)).to_dense(), square[:, :7])
    assert ToeplitzLike(G, H, shape=(5, 12)).nparams == 2 * 2 * 12


def test_transpose_identity_and_adjoint_kernel():
    rng = np.random.default_rng(1)
    v = rng.standard_normal(9)
    for f in (1.0, -1.0):
        np.testing.assert_allclose(f_circulant(v, f).T, f_circulant(tau(v, f), f), atol=1e-14)
    Q, R = rng.standard_normal((9, 9)), rng.standard_normal((6, 8))
    assert np.vdot(_assemble(Q, 6, 8), R) == pytest.approx(np.vdot(Q, _adjoint(R, 9)), rel=1e-12)


@settings(max_examples=30)
@given(m=st.integers(1, 70), n=st.integers(1, 70), rank=st.integers(1, 6), k=st.integers(1, 5),
       seed=st.integers(0, 2**16), single=st.booleans())
def test_fft_products_match_to_dense(m, n, rank, k, seed, single):
    rng = np.random.default_rng(seed)
    M = ToeplitzLike.random((m, n), rank=rank, seed=seed, dtype=np.float32 if single else np.float64)
    D = M.to_dense().astype(np.float64)
    X, Y = rng.standard_normal((n, k)), rng.standard_normal((m, k))
    tol = (2e-4 if single else 1e-11) * max(1.0, np.abs(D).max()) * max(m, n)
    np.testing.assert_allclose(M @ X, D @ X, atol=tol, rtol=0)
    np.testing.assert_allclose(M.T @ Y, D.T @ Y, atol=tol, rtol=0)


def test_products_are_batched_in_chunks(monkeypatch):
    import structmat.matrices.toeplitz_like as module

    M = ToeplitzLike.random((40, 33), rank=4, seed=3)
    X = np.random.default_rng(3).standard_normal((33, 50))
    expected = M.to_dense() @ X
    monkeypatch.setattr(module, "_CHUNK_ELEMENTS", 4 * 40 * 7)  # 7 columns per chunk
    np.testing.assert_allclose(M @ X, expected, atol=1e-11)


@pytest.mark.parametrize("G, H, shape, match", [
    (np.ones((4, 2)), np.ones((4, 3)), None, "same shape"),
    (np.ones((4, 2)), np.ones((4, 2)), (3, 3), "max"),
    (np.ones((4, 0)), np.ones((4, 0)), None, "at least one"),
])
def test_bad_generators_raise(G, H, shape, match):
    with pytest.raises(ValueError, match=match):
        ToeplitzLike(G, H, shape=shape)
