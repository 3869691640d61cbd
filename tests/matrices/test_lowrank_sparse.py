"""LowRankSparse: its own validation, counts and views (the registry-wide checks are in test_matrix_conformance)."""

import numpy as np
import pytest
import scipy.sparse

import structmat
from structmat.matrices.lowrank_sparse import LowRankSparse


def test_counts_and_bytes():
    rng = np.random.default_rng(0)
    S = np.zeros((6, 5))
    S[0, 1], S[4, 3], S[4, 4] = 1.0, -2.0, 3.0
    M = LowRankSparse(rng.standard_normal((6, 2)), rng.standard_normal((5, 2)), S)
    assert (M.rank, M.nnz, M.nparams) == (2, 3, 2 * 11 + 3)
    assert M.nindices == 3 + 7 and M.nbytes == 4 * M.nparams + 4 * M.nindices
    np.testing.assert_allclose(M.to_dense(), M.U @ M.V.T + S)
    np.testing.assert_array_equal(M.sparse_part().toarray(), S)
    np.testing.assert_allclose(M.lowrank_part().to_dense(), M.U @ M.V.T)


def test_empty_parts():
    rng = np.random.default_rng(1)
    low = LowRankSparse(rng.standard_normal((4, 1)), rng.standard_normal((3, 1)), np.zeros((4, 3)))
    assert low.nnz == 0 and low.nindices == 0 and low.nbytes == 4 * 7  # no S stored: no row pointers either
    sparse = LowRankSparse(np.zeros((4, 0)), np.zeros((3, 0)), np.eye(4, 3))
    assert sparse.rank == 0 and sparse.lowrank_part() is None and sparse.nparams == 3
    np.testing.assert_array_equal(sparse @ np.ones(3), [1, 1, 1, 0])
    with pytest.raises(ValueError, match="rank >= 1 or at least one stored value"):
        LowRankSparse(np.zeros((4, 0)), np.zeros((3, 0)), np.zeros((4, 3)))


def test_from_csr_keeps_stored_zeros_and_scipy_input():
    U, V = np.ones((3, 1)), np.ones((4, 1))
    M = LowRankSparse.from_csr(U, V, [0, 1, 1, 2], [2, 0], [0.0, 5.0])
    assert M.nnz == 2 and M.nparams == 9
    csr = scipy.sparse.csr_array(([1.0, 2.0], ([0, 2], [3, 1])), shape=(3, 4))
    np.testing.assert_array_equal(LowRankSparse(U, V, csr).sparse_part().toarray(), csr.toarray())


@pytest.mark.parametrize("args, error, match", [
    ((np.ones((3, 1)), np.ones((4, 2)), np.zeros((3, 4))), ValueError, "same number of columns"),
    ((np.ones(3), np.ones((4, 1)), np.zeros((3, 4))), ValueError, "2-D"),
    ((np.ones((3, 1)), np.ones((4, 1)), np.zeros((4, 3))), ValueError, r"S must have shape \(m, n\) = \(3, 4\)"),
    ((np.full((3, 1), np.nan), np.ones((4, 1)), np.zeros((3, 4))), ValueError, "finite"),
    ((np.ones((3, 1)), np.ones((4, 1)), np.full((3, 4), np.inf)), ValueError, "finite"),
    ((np.ones((3, 1), dtype=complex), np.ones((4, 1)), np.zeros((3, 4))), TypeError, "real numbers"),
])
def test_bad_parts_raise(args, error, match):
    with pytest.raises(error, match=match):
        LowRankSparse(*args)


def test_bad_csr_raises():
    U, V = np.ones((3, 1)), np.ones((4, 1))
    with pytest.raises(ValueError, match="strictly increasing"):
        LowRankSparse.from_csr(U, V, [0, 2, 2, 2], [1, 1], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"column indices must lie in \[0, 4\)"):
        LowRankSparse.from_csr(U, V, [0, 1, 1, 1], [4], [1.0])
    with pytest.raises(ValueError, match="indptr must have 4 entries"):
        LowRankSparse.from_csr(U, V, [0, 1], [0], [1.0])


def test_transpose_and_scaled(rng):
    M = LowRankSparse.random((9, 7), rank=2, density=0.2, seed=3)
    T = M.T
    assert type(T) is LowRankSparse and T.nparams == M.nparams and T.nindices == M.nnz + 8
    np.testing.assert_allclose(T.to_dense(), M.to_dense().T, atol=1e-12)
    for factor in (4.0, -0.5, 0.0):
        S = M.scaled(factor)
        assert S.nparams == M.nparams and S.rank == M.rank
        np.testing.assert_allclose(S.to_dense(), factor * M.to_dense(), atol=1e-12)
    with pytest.raises(ValueError, match="finite"):
        M.scaled(np.inf)


def test_float32_products_and_save(tmp_path, rng):
    M = LowRankSparse.random((12, 10), rank=3, density=0.1, seed=4).astype(np.float32)
    x = rng.standard_normal(10)
    assert (M @ x).dtype == np.float32
    M.save(tmp_path / "m.npz")
    L = structmat.load(tmp_path / "m.npz")
    assert isinstance(L, LowRankSparse) and L.dtype == np.float32 and L.nnz == M.nnz
    np.testing.assert_array_equal(L @ x, M @ x)
