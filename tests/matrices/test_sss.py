"""SSS matrices: structure, validation naming the stage, exact counts, products (hypothesis), transposition,
permutations and files."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import structmat
from structmat.matrices.base import StructuredMatrix
from structmat.matrices.sss import SSS, cap_causal_dims, cap_dims, sss_nparams, stage_sizes


def _blocks(M):
    return {kind: M.stages(kind) for kind in "ABCDEFG"}


def _dense_by_definition(M):
    """Block (i, j) = C_i A_{i-1}…A_{j+1} B_j below, D_i on, G_i E_{i+1}…E_{j-1} F_j above the diagonal."""
    S = _blocks(M)
    K = M.num_stages
    rows = []
    for i in range(K):
        row = []
        for j in range(K):
            if i == j:
                block = S["D"][i]
            elif i > j:
                T = S["B"][j]
                for k in range(j + 1, i):
                    T = S["A"][k] @ T
                block = S["C"][i] @ T
            else:
                T = S["F"][j]
                for k in range(j - 1, i, -1):
                    T = S["E"][k] @ T
                block = S["G"][i] @ T
            row.append(block.reshape(M.m_sizes[i], M.n_sizes[j]))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


def test_blocks_follow_the_definition():
    M = SSS.random((30, 22), num_stages=5, state_dim=3, seed=0)
    np.testing.assert_allclose(M.to_dense(), _dense_by_definition(M), atol=1e-13)


@st.composite
def partitions(draw):
    K = draw(st.integers(1, 7))
    m_sizes = draw(st.lists(st.integers(0, 6), min_size=K, max_size=K))
    n_sizes = draw(st.lists(st.integers(0, 6), min_size=K, max_size=K))
    m_sizes[draw(st.integers(0, K - 1))] += 1  # both sides non-empty
    n_sizes[draw(st.integers(0, K - 1))] += 1
    return m_sizes, n_sizes


@settings(max_examples=60)
@given(part=partitions(), state_dim=st.integers(0, 5), extra=st.integers(0, 3), cols=st.integers(1, 4),
       seed=st.integers(0, 2**16), permuted=st.booleans())
def test_products_match_dense(part, state_dim, extra, cols, seed, permuted):
    """M @ X, M.T @ Y and to_dense agree for any partition (zero-size stages too) and state dims."""
    m_sizes, n_sizes = part
    M = SSS.random((sum(m_sizes), sum(n_sizes)), m_sizes=m_sizes, n_sizes=n_sizes, state_dim=state_dim, seed=seed)
    rng = np.random.default_rng(seed)
    if extra:  # non-uniform dims (within the caps) per direction
        K = len(m_sizes)
        d, e = cap_dims(m_sizes, n_sizes, rng.integers(0, state_dim + extra + 1, K + 1),
                        rng.integers(0, state_dim + extra + 1, K + 1))
        M = SSS.random(M.shape, m_sizes=m_sizes, n_sizes=n_sizes, state_dim=0, seed=seed)
        shapes = {"A": [(d[k + 1], d[k]) for k in range(K)], "B": [(d[k + 1], n_sizes[k]) for k in range(K)],
                  "C": [(m_sizes[k], d[k]) for k in range(K)], "D": [(m_sizes[k], n_sizes[k]) for k in range(K)],
                  "E": [(e[k], e[k + 1]) for k in range(K)], "F": [(e[k], n_sizes[k]) for k in range(K)],
                  "G": [(m_sizes[k], e[k + 1]) for k in range(K)]}
        M = SSS(*[[rng.standard_normal(s) for s in shapes[kind]] for kind in "ABCDEFG"])
    if permuted:
        M = SSS.from_flat(M.m_sizes, M.n_sizes, M.causal_dims, M.anticausal_dims,
                          **{k: M.flat(k) for k in "ABCDEFG"}, row_order=rng.permutation(M.shape[0]),
                          col_order=rng.permutation(M.shape[1]))
    D = M.to_dense()
    np.testing.assert_allclose(D, StructuredMatrix.to_dense(M), atol=1e-10 * max(1, np.abs(D).max()))
    if not permuted:
        np.testing.assert_allclose(D, _dense_by_definition(M), atol=1e-10 * max(1, np.abs(D).max()))
    X, Y = rng.standard_normal((M.shape[1], cols)), rng.standard_normal((M.shape[0], cols))
    tol = 1e-10 * max(1.0, np.abs(D).max()) * max(M.shape)
    np.testing.assert_allclose(M @ X, D @ X, atol=tol)
    np.testing.assert_allclose(M.T @ Y, D.T @ Y, atol=tol)
    np.testing.assert_allclose(M.transpose().to_dense(), D.T, atol=tol)
    assert M.nparams == sss_nparams(M.m_sizes, M.n_sizes, M.causal_dims, M.anticausal_dims)


def test_nparams_formula_uniform_and_reference_overcount():
    """Note §1.2: with uniform d the count is Σ m_k n_k + 2(K-2)d² + d(2m+2n-m_1-m_K-n_1-n_K), which is
    d(m_1+m_K+n_1+n_K) less than the reference implementation's count."""
    K, d, m, n = 8, 20, 1000, 512
    ms, ns = stage_sizes(m, K), stage_sizes(n, K)
    dims = np.array([0] + [d] * (K - 1) + [0])
    count = sss_nparams(ms, ns, dims, dims)
    S = 2 * m + 2 * n - ms[0] - ms[-1] - ns[0] - ns[-1]
    assert count == int(np.sum(ms * ns)) + 2 * (K - 2) * d * d + d * S == 121_720
    reference = int(np.sum(ms * ns + 2 * d * (ms + ns))) + 2 * (K - 2) * d * d
    assert reference - count == d * (ms[0] + ms[-1] + ns[0] + ns[-1])


def test_dims_are_capped_to_a_minimal_realization():
    # 64x64, K=4, d=40: the Hankel blocks allow (16, 32, 16) (note §1.2)
    ms = ns = stage_sizes(64, 4)
    d, e = cap_dims(ms, ns, np.full(5, 40), np.full(5, 40))
    assert d.tolist() == [0, 16, 32, 16, 0] and e.tolist() == [0, 16, 32, 16, 0]
    assert sss_nparams(ms, ns, d, e) == 7168
    # a zero-size stage: d[b] <= d[b+1] + m_b and d[b+1] <= d[b] + n_b
    assert cap_causal_dims([2, 0, 2], [2, 2, 0], [9, 9, 9, 9]).tolist() == [0, 2, 2, 0]


def test_stage_sizes_spread_empty_stages():
    assert stage_sizes(10, 4).tolist() == [2, 3, 2, 3]
    assert stage_sizes(3, 6).tolist() == [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda S: S["A"].__setitem__(2, np.zeros((2, 3))), r"stage 2: A_2 has shape \(2, 3\) but must be \(2, 2\)"),
        (lambda S: S["B"].__setitem__(1, np.zeros((3, 5))), r"stage 1: B_1 has shape \(3, 5\) but must be \(2, 5\)"),
        (lambda S: S["C"].__setitem__(0, np.zeros((6, 1))), r"stage 0: C_0 must have 0 columns"),
        (lambda S: S["G"].__setitem__(3, np.zeros((6, 2))), r"stage 3: G_3 must have 0 columns"),
        (lambda S: S["F"].__setitem__(3, np.zeros((1, 5))), r"stage 3: F_3 has shape \(1, 5\) but must be \(2, 5\)"),
        (lambda S: S["E"].pop(), r"same number K >= 1"),
        (lambda S: S["D"].__setitem__(1, np.zeros(5)), r"stage 1: D_1 must be 2-D"),
        (lambda S: S["D"].__setitem__(0, np.full((6, 5), np.nan)), r"stage 0: D_0 has NaN or Inf"),
    ],
)
def test_validation_names_the_stage(change, match):
    M = SSS.random((24, 20), num_stages=4, state_dim=2, seed=0)
    S = {kind: [x.copy() for x in blocks] for kind, blocks in _blocks(M).items()}
    change(S)
    with pytest.raises(ValueError, match=match):
        SSS(*[S[kind] for kind in "ABCDEFG"])


def test_flat_validation():
    M = SSS.random((24, 20), num_stages=4, state_dim=2, seed=0)
    flats = {k: M.flat(k) for k in "ABCDEFG"}
    with pytest.raises(ValueError, match=r"flat B must have shape \(\d+,\)"):
        SSS.from_flat(M.m_sizes, M.n_sizes, M.causal_dims, M.anticausal_dims, **{**flats, "B": flats["B"][:-1]})
    with pytest.raises(ValueError, match="start and end with 0"):
        SSS.from_flat(M.m_sizes, M.n_sizes, [1, 2, 2, 2, 0], M.anticausal_dims, **flats)
    with pytest.raises(TypeError, match="m_sizes must hold integers"):
        SSS.from_flat(M.m_sizes.astype(float), M.n_sizes, M.causal_dims, M.anticausal_dims, **flats)
    with pytest.raises(ValueError, match="row_order must be a permutation"):
        SSS.from_flat(M.m_sizes, M.n_sizes, M.causal_dims, M.anticausal_dims, **flats, row_order=np.zeros(24, int))


def test_transpose_is_an_sss_relabeling(rng):
    M = SSS.random((26, 19), num_stages=5, state_dim=3, seed=1)
    M = SSS.from_flat(M.m_sizes, M.n_sizes, M.causal_dims, M.anticausal_dims, **{k: M.flat(k) for k in "ABCDEFG"},
                      row_order=rng.permutation(26), col_order=rng.permutation(19))
    T = M.T
    assert isinstance(T, SSS) and T.shape == (19, 26) and T.nparams == M.nparams
    assert T.causal_dims.tolist() == M.anticausal_dims.tolist()
    np.testing.assert_allclose(T.to_dense(), M.to_dense().T, atol=1e-13)
    np.testing.assert_allclose(T.T.to_dense(), M.to_dense(), atol=1e-13)


def test_permutations_are_counted_applied_and_saved(tmp_path, rng):
    M = SSS.random((20, 30), num_stages=3, state_dim=2, seed=2)
    rows, cols = rng.permutation(20), rng.permutation(30)
    P = SSS.from_flat(M.m_sizes, M.n_sizes, M.causal_dims, M.anticausal_dims, **{k: M.flat(k) for k in "ABCDEFG"},
                      row_order=rows, col_order=cols)
    assert P.nparams == M.nparams and P.nindices == M.nindices + 50 and M.nindices == 4 * 3 + 2
    assert P.nbytes == 4 * P.nparams + 4 * P.nindices
    np.testing.assert_array_equal(P.to_dense()[rows][:, cols], M.to_dense())
    P.save(tmp_path / "p.npz")
    L = structmat.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(L.row_order, rows)
    np.testing.assert_array_equal(L.col_order, cols)
    x = rng.standard_normal(30)
    np.testing.assert_array_equal(L @ x, P @ x)
    assert "permuted" in repr(P)


def test_float32_products(rng):
    M = SSS.random((64, 48), num_stages=6, state_dim=4, seed=3)
    M32 = M.astype(np.float32)
    x = rng.standard_normal((48, 5))
    assert (M32 @ x).dtype == np.float32
    np.testing.assert_allclose(M32 @ x, M @ x, rtol=1e-4, atol=1e-4)
