"""Every family that contains low rank builds its member equal to a given U Vᵀ, at the same count."""

import numpy as np
import pytest

import structmat
from structmat.families import CONTAINS_LOWRANK, FAMILIES
from structmat.matrices.lowrank import LowRank

MEMBERS = sorted(name for name in CONTAINS_LOWRANK & set(FAMILIES) if hasattr(FAMILIES[name].matrix_class,
                                                                               "from_lowrank"))


def test_the_families_of_this_group_have_the_hook():
    assert {"monarch", "sss", "hodlr", "hedlr", "hmatrix"} <= set(MEMBERS)


@pytest.mark.parametrize("family", MEMBERS)
@pytest.mark.parametrize("shape, rank", [((13, 9), 2), ((6, 20), 3), ((1, 7), 1), ((8, 1), 1)])
def test_lowrank_member_is_exact_at_the_same_count(tmp_path, family, shape, rank):
    rng = np.random.default_rng(rank)
    L = LowRank(rng.standard_normal((shape[0], rank)), rng.standard_normal((shape[1], rank)))
    M = FAMILIES[family].matrix_class.from_lowrank(L)
    assert M.family == family and M.shape == shape and M.nparams == L.nparams
    np.testing.assert_allclose(M.to_dense(), L.to_dense(), atol=1e-13)
    x, y = rng.standard_normal((shape[1], 3)), rng.standard_normal((shape[0], 2))
    np.testing.assert_allclose(M @ x, L.to_dense() @ x, atol=1e-12)
    np.testing.assert_allclose(M.T @ y, L.to_dense().T @ y, atol=1e-12)
    M.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(structmat.load(tmp_path / "m.npz").to_dense(), M.to_dense())
