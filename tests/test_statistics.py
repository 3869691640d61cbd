"""InputStatistics: streaming accumulation, files, bad input, extreme magnitudes."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from structmat import InputStatistics, StructmatFileError


def test_matches_the_direct_formulas(rng):
    X = rng.standard_normal((300, 7)) * np.arange(1, 8)
    stats = InputStatistics.from_rows(X, chunk_rows=64)
    assert stats.count == 300
    np.testing.assert_allclose(stats.second_moment, X.T @ X / 300, rtol=1e-12)
    np.testing.assert_allclose(stats.mean, X.mean(axis=0), rtol=1e-12, atol=1e-15)


@given(st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_any_chunking_gives_the_same_statistics(cuts):
    X = np.random.default_rng(len(cuts)).standard_normal((sum(cuts), 5))
    stats = InputStatistics(5)
    start = 0
    for size in cuts:
        stats.update(X[start:start + size])
        start += size
    whole = InputStatistics.from_rows(X)
    np.testing.assert_allclose(stats.second_moment, whole.second_moment, rtol=1e-12, atol=1e-14)
    assert stats.count == whole.count


def test_same_rows_same_bytes(rng, tmp_path):
    X = rng.standard_normal((50, 4))
    a, b = InputStatistics.from_rows(X), InputStatistics.from_rows(X)
    a.save(tmp_path / "a.npz")
    b.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_merge_equals_one_pass(rng):
    X = rng.standard_normal((90, 6))
    merged = InputStatistics.from_rows(X[:30]).merge(InputStatistics.from_rows(X[30:] * 1e3 / 1e3))
    np.testing.assert_allclose(merged.second_moment, InputStatistics.from_rows(X).second_moment, rtol=1e-12)
    with pytest.raises(ValueError, match="cannot merge statistics of 5 features into 6"):
        merged.merge(InputStatistics(5).update(np.ones((2, 5))))


def test_torch_batches_and_leading_axes(rng):
    torch = pytest.importorskip("torch")
    X = rng.standard_normal((4, 10, 3))
    stats = InputStatistics.from_batches([torch.from_numpy(X[:2]).float(), torch.from_numpy(X[2:]).float()])
    flat = X.reshape(-1, 3).astype(np.float32).astype(np.float64)
    assert stats.count == 40
    np.testing.assert_allclose(stats.second_moment, flat.T @ flat / 40, rtol=1e-6)


def test_memory_map_and_cache_style_chunks(rng, tmp_path):
    X = rng.standard_normal((1000, 5)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    stats = InputStatistics.from_rows(mapped, chunk_rows=128)
    X64 = X.astype(np.float64)
    np.testing.assert_allclose(stats.second_moment, X64.T @ X64 / 1000, rtol=1e-10)


def test_save_load_round_trip_and_foreign_files(rng, tmp_path):
    stats = InputStatistics.from_rows(rng.standard_normal((20, 3)))
    stats.save(tmp_path / "s.npz")
    back = InputStatistics.load(tmp_path / "s.npz")
    assert back.count == 20 and np.array_equal(back.second_moment, stats.second_moment)
    np.savez(tmp_path / "foreign.npz", x=np.ones(3))
    with pytest.raises(StructmatFileError, match="not a readable input-statistics file"):
        InputStatistics.load(tmp_path / "foreign.npz")
    (tmp_path / "bad.npz").write_bytes(b"\x80\x04not a zip")
    with pytest.raises(StructmatFileError, match="not an .npz"):
        InputStatistics.load(tmp_path / "bad.npz")
    data = (tmp_path / "s.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(StructmatFileError):
        InputStatistics.load(tmp_path / "cut.npz")


@pytest.mark.parametrize("bad, error, match", [
    (np.ones(3), ValueError, r"shape \(N, 3\).*1-D"),
    (np.ones((4, 2)), ValueError, r"shape \(N, 3\).*in_features=3"),
    (np.array([[1.0, np.nan, 2.0]]), ValueError, "must be finite"),
    (np.ones((2, 3), dtype=complex), TypeError, "complex"),
    (np.array([[object()] * 3]), TypeError, "real floats or integers"),
])
def test_bad_rows_get_one_clear_error(bad, error, match):
    stats = InputStatistics(3)
    with pytest.raises(error, match=match):
        stats.update(bad)
    assert stats.count == 0


def test_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one row"):
        InputStatistics.from_rows(np.empty((0, 4)))
    with pytest.raises(ValueError, match="no rows"):
        InputStatistics(4).second_moment


@pytest.mark.parametrize("magnitude", [1e-300, 1e-150, 1.0, 1e150, 1e300])
def test_extreme_magnitudes_keep_the_normalised_moment(rng, magnitude):
    X = rng.standard_normal((64, 4))
    reference = InputStatistics.from_rows(X)
    scaled = InputStatistics.from_rows(X * magnitude)
    ratio = reference.normalized_second_moment / np.trace(reference.normalized_second_moment)
    np.testing.assert_allclose(scaled.normalized_second_moment / np.trace(scaled.normalized_second_moment), ratio,
                               rtol=1e-12)
    assert np.isfinite(scaled.whitening_factor()).all()


def test_rank_deficient_inputs_whiten_without_nan(rng):
    X = rng.standard_normal((5, 40))     # fewer rows than columns
    X[:, 7] = 0.0                        # a dead feature
    L = InputStatistics.from_rows(X).whitening_factor()
    assert np.isfinite(L).all()
    assert np.linalg.matrix_rank(L) == 40


def test_cholesky_whitening_factor_and_its_fallback():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 8)) @ rng.standard_normal((8, 8))
    stats = InputStatistics.from_rows(X)
    C = stats.regularized_second_moment()
    T = stats.cholesky_factor()
    assert np.allclose(T @ T.T, C) and np.allclose(T, np.tril(T))
    mu, V = stats.regularized_eigh()
    assert np.allclose((V * mu) @ V.T, C)                    # the same regularised moment as the eigen route
    assert stats.whitening_factor() is T                     # cached
    singular = InputStatistics.from_rows(np.c_[X[:, :3], np.zeros((50, 2))])
    assert singular.cholesky_factor(ridge=0.0) is None
    L = singular.whitening_factor(ridge=0.0)                 # falls back on V diag(√μ)
    assert np.allclose(L @ L.T, singular.regularized_second_moment(ridge=0.0), atol=1e-12)


def test_whitened_low_rank_does_not_depend_on_the_factor():
    import structmat
    from structmat.approximators.lowrank import _fit_whitened

    rng = np.random.default_rng(4)
    W = rng.standard_normal((12, 9))
    stats = InputStatistics.from_rows(rng.standard_normal((40, 9)) * np.linspace(0.1, 3, 9))
    M = structmat.approximate(W, "lowrank", 40, inputs=stats).to_dense()
    stats._cholesky_cache = (1e-6, None)                     # force the eigendecomposition route
    E = _fit_whitened(W, 40 // 21, stats, 1e-6).to_dense()
    assert np.allclose(M, E, atol=1e-10 * np.abs(M).max())
