"""Checks every registered family's matrix class must pass (one list, like scikit-learn's test_common)."""

import numpy as np
import pytest
import scipy.sparse.linalg

import structmat
from structmat.families import FAMILIES
from structmat.matrices.base import StructuredMatrix

from ..conftest import SHAPES

FAMILY_NAMES = list(FAMILIES)


def example(family, shape, seed=0):
    return FAMILIES[family].matrix_class.random(shape, seed=seed)


@pytest.fixture(params=FAMILY_NAMES)
def family(request):
    return request.param


@pytest.mark.parametrize("shape", SHAPES)
def test_products_match_dense(family, shape, rng):
    M = example(family, shape)
    D = M.to_dense()
    m, n = shape
    assert M.shape == shape and D.shape == shape and M.family == family
    x, X = rng.standard_normal(n), rng.standard_normal((n, 3))
    y, Y = rng.standard_normal(m), rng.standard_normal((m, 4))
    tol = dict(rtol=1e-10, atol=1e-10 * max(1.0, np.abs(D).max()))
    np.testing.assert_allclose(M @ x, D @ x, **tol)
    np.testing.assert_allclose(M @ X, D @ X, **tol)
    np.testing.assert_allclose(y @ M, y @ D, **tol)
    np.testing.assert_allclose(Y.T @ M, Y.T @ D, **tol)
    np.testing.assert_allclose(M.T @ Y, D.T @ Y, **tol)
    assert (M @ x).shape == (m,) and (M @ X).shape == (m, 3) and (Y.T @ M).shape == (4, n)


@pytest.mark.parametrize("shape", SHAPES)
def test_dot_test(family, shape, rng):
    """<M u, v> = <u, Mᵀ v> (the PyLops dot test) for the fast products, without the dense matrix."""
    M = example(family, shape, seed=1)
    u, v = rng.standard_normal(shape[1]), rng.standard_normal(shape[0])
    lhs, rhs = np.dot(M @ u, v), np.dot(u, M.T @ v)
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


@pytest.mark.parametrize("shape", SHAPES)
def test_to_dense_matches_generic(family, shape):
    M = example(family, shape, seed=2)
    np.testing.assert_allclose(M.to_dense(), StructuredMatrix.to_dense(M), rtol=1e-12, atol=1e-12)


def test_nparams_counts_stored_float_numbers(family):
    M = example(family, (20, 30), seed=3)
    stored = sum(a.size for a in M._arrays().values() if a.dtype.kind == "f")
    assert M.nparams == stored
    assert M.nbytes == 4 * M.nparams + 4 * M.nindices
    assert M.params_share == pytest.approx(M.nparams / 600)


def test_save_load_round_trip_is_exact(family, tmp_path, rng):
    M = example(family, (20, 30), seed=4)
    for dtype in (np.float64, np.float32):
        Mi = M.astype(dtype)
        path = tmp_path / f"m_{np.dtype(dtype).name}.npz"
        Mi.save(path)
        L = structmat.load(path)
        assert type(L) is type(Mi) and L.shape == Mi.shape and L.dtype == Mi.dtype and L.nparams == Mi.nparams
        for key, value in Mi._arrays().items():
            np.testing.assert_array_equal(L._arrays()[key], value)
            assert L._arrays()[key].dtype == value.dtype
        x = rng.standard_normal((30, 2))
        np.testing.assert_array_equal(L @ x, Mi @ x)
    assert not list(tmp_path.glob("*.tmp"))


def test_astype_float32(family, rng):
    M = example(family, (20, 30), seed=5)
    M32 = M.astype(np.float32)
    assert M32.dtype == np.float32 and M32.nparams == M.nparams
    x = rng.standard_normal(30)
    out = M32 @ x
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, M @ x, rtol=1e-4, atol=1e-4 * np.abs(M.to_dense()).max() * 30)


def test_transpose_and_linear_operator(family, rng):
    M = example(family, (20, 30), seed=6)
    assert M.T.shape == (30, 20)
    assert M.T.T is M or type(M.T.T) is type(M)
    np.testing.assert_allclose(M.T.to_dense(), M.to_dense().T, atol=1e-12)
    op = scipy.sparse.linalg.aslinearoperator(M)
    x, y = rng.standard_normal(30), rng.standard_normal(20)
    np.testing.assert_allclose(op @ x, M.to_dense() @ x, atol=1e-10)
    np.testing.assert_allclose(op.rmatvec(y), M.to_dense().T @ y, atol=1e-10)
    op2 = M.aslinearoperator()
    np.testing.assert_allclose(op2.matmat(np.eye(30)), M.to_dense(), atol=1e-10)


def test_arrays_are_read_only(family):
    M = example(family, (20, 30), seed=7)
    for value in M._arrays().values():
        assert not value.flags.writeable


def test_repr_is_informative(family):
    M = example(family, (20, 30), seed=8)
    text = repr(M)
    assert type(M).__name__ in text and "shape=(20, 30)" in text and f"nparams={M.nparams:_}" in text


def test_bad_operands_raise(family):
    M = example(family, (20, 30), seed=9)
    with pytest.raises(ValueError, match=r"expected x of shape \(30,\) or \(30, k\); got \(20,\)"):
        M @ np.ones(20)
    with pytest.raises(ValueError, match="got"):
        M @ np.ones((30, 2, 2))
    with pytest.raises(TypeError, match="complex"):
        M @ np.ones(30, dtype=complex)
    with pytest.raises(ValueError, match=r"\(20,\)"):
        np.ones(30) @ M


@pytest.mark.parametrize("shape", [(24, 24), (40, 17), (13, 36)])
def test_exact_structure_is_recovered(family, shape):
    """A matrix that is exactly of the family comes back to near machine precision at its own budget."""
    M = example(family, shape, seed=10)
    W = M.to_dense()
    fitted = structmat.approximate(W, family, M.nparams)
    assert fitted.nparams <= M.nparams
    assert structmat.relative_error(W, fitted) < 1e-10
