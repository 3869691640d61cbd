"""SparseProduct and Sparse: CSR storage, products against dense, counts, validation."""

import numpy as np
import pytest
import scipy.sparse

import structmat
from structmat.matrices.sparse_product import Sparse, SparseProduct


def test_chain_of_rectangular_factors_matches_dense(rng):
    shapes = [(7, 11), (11, 5), (5, 13), (13, 9)]
    dense = [np.where(rng.random(s) < 0.4, rng.standard_normal(s), 0.0) for s in shapes]
    M = SparseProduct(dense)
    D = dense[0] @ dense[1] @ dense[2] @ dense[3]
    np.testing.assert_allclose(M.to_dense(), D, atol=1e-12)
    X, Y = rng.standard_normal((9, 4)), rng.standard_normal((7, 3))
    np.testing.assert_allclose(M @ X, D @ X, atol=1e-12)
    np.testing.assert_allclose(M.T @ Y, D.T @ Y, atol=1e-12)
    assert M.num_factors == 4 and M.factor_shapes == shapes
    assert M.nparams == sum(np.count_nonzero(d) for d in dense)
    assert type(M.T) is SparseProduct and M.T.factor_shapes == [s[::-1] for s in reversed(shapes)]


def test_counts_indices_honestly():
    S1 = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    S2 = np.array([[0.0, 5.0, 0.0], [6.0, 0.0, 7.0]])
    M = SparseProduct([S1, S2])
    # values: 4 + 3; column indices: 4 + 3; row pointers: (3 + 1) + (2 + 1)
    assert M.nparams == 7 and M.nindices == 7 + 7
    assert M.nbytes == 4 * 7 + 4 * 14


def test_scipy_factors_keep_explicit_entries(rng):
    A = scipy.sparse.random(6, 5, density=0.5, random_state=0, format="coo")
    M = Sparse(A)
    assert M.nparams == A.nnz
    np.testing.assert_allclose(M.to_dense(), A.toarray())
    assert [f.shape for f in M.factors()] == [(6, 5)]


@pytest.mark.parametrize("factors, match", [
    ([np.ones((3, 4)), np.ones((5, 2))], "do not chain"),
    ([], "at least one"),
    ([np.ones((2, 2, 2))], "2-D"),
])
def test_bad_factors_raise(factors, match):
    with pytest.raises(ValueError, match=match):
        SparseProduct(factors)


def test_single_array_is_a_type_error():
    with pytest.raises(TypeError, match="sequence"):
        SparseProduct(np.ones((3, 3)))


def test_sparse_is_one_factor():
    with pytest.raises(ValueError, match="exactly one factor"):
        Sparse._from_arrays({"data_0": np.ones(1), "indices_0": np.zeros(1, np.int32),
                             "indptr_0": np.array([0, 1], np.int32), "data_1": np.ones(1),
                             "indices_1": np.zeros(1, np.int32), "indptr_1": np.array([0, 1], np.int32)},
                            {"factor_shapes": [[1, 1], [1, 1]]})


def test_corrupt_csr_is_rejected(tmp_path):
    M = SparseProduct.random((10, 12), seed=0)
    M.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["indices_1"] = arrays["indices_1"].copy()
    arrays["indices_1"][0] = 999
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(structmat.StructmatFileError, match="column indices"):
        structmat.load(tmp_path / "bad.npz")


def test_random_default_is_exactly_recoverable_and_generic_is_dense():
    M = SparseProduct.random((30, 20), seed=1)
    assert np.count_nonzero(M.to_dense()) <= M.nparams  # a row selection times a sparse factor
    G = SparseProduct.random((30, 20), seed=1, row_selection=False)
    assert np.count_nonzero(G.to_dense()) > G.nparams
