"""fit_lowrank_sparse: exact recovery, the split search, budgets in parameters and bytes, fitting to outputs."""

import numpy as np
import pytest

import structmat
from structmat import InputStatistics, output_error
from structmat.approximators.lowrank_sparse import fit_lowrank_sparse, split_for_rank
from structmat.matrices.lowrank_sparse import LowRankSparse


def spiky_powerlaw(shape, seed=0, spikes=0.02):
    """Singular values i^-0.7 plus a few large entries: what trained weights look like."""
    rng = np.random.default_rng(seed)
    m, n = shape
    U, _ = np.linalg.qr(rng.standard_normal((m, min(m, n))))
    V, _ = np.linalg.qr(rng.standard_normal((n, min(m, n))))
    W = (U * np.arange(1, min(m, n) + 1) ** -0.7) @ V.T
    idx = rng.choice(m * n, int(spikes * m * n), replace=False)
    W.ravel()[idx] += rng.standard_normal(idx.size) * 4 * np.abs(W).max()
    return W


@pytest.mark.parametrize("shape, rank, density", [((30, 30), 3, 0.04), ((50, 20), 1, 0.08), ((20, 45), 4, 0.03),
                                                  ((25, 25), 0, 0.1)])
def test_exact_recovery(shape, rank, density):
    M = LowRankSparse.random(shape, rank=rank, density=density, seed=1)
    fitted = fit_lowrank_sparse(M.to_dense(), M.nparams)
    assert (fitted.rank, fitted.nnz) == (M.rank, M.nnz)
    assert structmat.relative_error(M.to_dense(), fitted) < 1e-10


def test_exact_recovery_of_pure_low_rank():
    M = LowRankSparse(*structmat.LowRank.random((20, 16), rank=2, seed=0)._arrays().values(), np.zeros((20, 16)))
    fitted = fit_lowrank_sparse(M.to_dense(), 2 * 36)
    assert fitted.rank == 2 and fitted.nnz == 0 and structmat.relative_error(M.to_dense(), fitted) < 1e-12


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5])
@pytest.mark.parametrize("kind", ["spiky", "gaussian"])
def test_never_worse_than_lowrank_or_sparse(share, kind):
    W = spiky_powerlaw((60, 80)) if kind == "spiky" else np.random.default_rng(2).standard_normal((60, 80))
    fitted = fit_lowrank_sparse(W, share)
    assert fitted.nparams <= int(share * W.size)
    error = structmat.relative_error(W, fitted)
    for other in ("lowrank", "sparse"):
        assert error <= structmat.relative_error(W, structmat.approximate(W, other, share)) * (1 + 1e-12)
    if kind == "spiky" and share >= 0.25:  # both parts help on such a matrix
        assert 0 < fitted.rank and fitted.nnz > 0
        assert error < 0.9 * min(structmat.relative_error(W, structmat.approximate(W, f, share))
                                 for f in ("lowrank", "sparse"))


def test_larger_budget_is_never_worse():
    W = spiky_powerlaw((40, 50), seed=3)
    errors = [structmat.relative_error(W, fit_lowrank_sparse(W, share)) for share in (0.05, 0.1, 0.2, 0.3, 0.5, 0.8)]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(errors, errors[1:]))


def test_deterministic_and_scale_free():
    W = spiky_powerlaw((40, 30), seed=4)
    a, b = fit_lowrank_sparse(W, 0.3), fit_lowrank_sparse(W, 0.3)
    for key, value in a._arrays().items():
        np.testing.assert_array_equal(b._arrays()[key], value)
    c = fit_lowrank_sparse(W * 1024.0, 0.3)
    assert (c.rank, c.nnz) == (a.rank, a.nnz)
    np.testing.assert_allclose(c.to_dense(), 1024.0 * a.to_dense(), rtol=1e-9, atol=1e-9 * np.abs(W).max() * 1024)


def test_byte_budget_counts_indices():
    W = spiky_powerlaw((60, 80), seed=5)
    for budget in (0.25, 0.5, 20_000):
        fitted = fit_lowrank_sparse(W, budget, unit="bytes")
        limit = int(budget * W.size) * 4 if isinstance(budget, float) else budget
        assert fitted.nbytes <= limit
        assert fitted.nparams < (limit // 4)
    # at equal bytes it still beats low rank on a spiky matrix
    lowrank = structmat.approximate(W, "lowrank", 0.5)
    assert structmat.relative_error(W, fit_lowrank_sparse(W, 0.5, unit="bytes")) < structmat.relative_error(W, lowrank)


def test_split_for_rank():
    assert split_for_rank((10, 20), 100, 2) == 40
    assert split_for_rank((10, 20), 100, 2, "bytes") == (40 - 11) // 2
    assert split_for_rank((10, 20), 71, 2, "bytes") == 0      # 11 words left: not enough for one value + pointers
    assert split_for_rank((10, 20), 50, 2) == -10
    assert split_for_rank((3, 4), 10_000, 0) == 12


def test_fixed_rank_and_errors():
    W = spiky_powerlaw((30, 40), seed=6)
    assert fit_lowrank_sparse(W, 0.3, rank=5).rank == 5
    with pytest.raises(ValueError, match="cannot hold rank 6"):
        fit_lowrank_sparse(W, 400, rank=6)
    with pytest.raises(ValueError, match=r"below the smallest low-rank plus sparse matrix.*row pointers"):
        fit_lowrank_sparse(W, 100, unit="bytes")
    with pytest.raises(ValueError, match="unit must be one of"):
        fit_lowrank_sparse(W, 0.3, unit="words")
    with pytest.raises(TypeError, match="rank must be an int"):
        fit_lowrank_sparse(W, 0.3, rank=2.5)


def correlated_inputs(n, rows, seed):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((n, n)) * np.geomspace(3, 0.03, n)
    return rng.standard_normal((rows, n)) @ mix


def test_fit_to_outputs_beats_the_plain_fit_on_correlated_inputs():
    W = spiky_powerlaw((40, 50), seed=7)
    X = correlated_inputs(50, 400, seed=8)
    plain = fit_lowrank_sparse(W, 0.25)
    aware = fit_lowrank_sparse(W, 0.25, inputs=X)
    assert aware.nparams <= int(0.25 * W.size)
    assert output_error(W, aware, X) < 0.5 * output_error(W, plain, X)
    same = structmat.approximate(W, "lowrank_sparse", 0.25, inputs=InputStatistics.from_rows(X))
    np.testing.assert_array_equal(same.to_dense(), aware.to_dense())


def test_sparse_values_fitted_to_outputs_are_least_squares():
    """On the support it returns, the gradient of the output error with respect to S's values vanishes."""
    W = spiky_powerlaw((20, 24), seed=9)
    X = correlated_inputs(24, 300, seed=10)
    M = fit_lowrank_sparse(W, 0.3, inputs=X, ridge=0.0)
    assert M.nnz > 0
    residual = W - M.to_dense()
    gradient = residual @ (X.T @ X)
    rows = np.repeat(np.arange(20), np.diff(M.indptr))
    assert np.abs(gradient[rows, M.indices]).max() <= 1e-7 * np.abs(W @ X.T @ X).max()


def test_work_limit_caps_the_steps_and_keeps_the_guarantees(monkeypatch):
    """A small max_work stops the alternation early (fewer steps, a larger error than unlimited) but never drops
    rank 0 or the largest rank, so the result is still no worse than lowrank and sparse."""
    import structmat.approximators.lowrank_sparse as module

    steps = []
    run = module._Split.run

    def counting(self, iterations, tol):
        before = self.iterations
        run(self, iterations, tol)
        steps.append(self.iterations - before)

    monkeypatch.setattr(module._Split, "run", counting)
    W = spiky_powerlaw((60, 80), seed=4)
    free = fit_lowrank_sparse(W, 0.25, max_work=None)
    unlimited = sum(steps)
    steps.clear()
    capped = fit_lowrank_sparse(W, 0.25, max_work=60 * W.size * (3 * 10 + module.SELECTION_COST))
    assert 0 < sum(steps) <= 70 < unlimited
    error = structmat.relative_error(W, capped)
    assert structmat.relative_error(W, free) <= error * (1 + 1e-12)
    for other in ("lowrank", "sparse"):
        assert error <= structmat.relative_error(W, structmat.approximate(W, other, 0.25)) * (1 + 1e-12)
    # the default limit is far above this size: the same fit as without a limit
    np.testing.assert_array_equal(fit_lowrank_sparse(W, 0.25).to_dense(), free.to_dense())
    with pytest.raises(ValueError, match="max_work must be a number > 0 or None"):
        fit_lowrank_sparse(W, 0.25, max_work=0)
