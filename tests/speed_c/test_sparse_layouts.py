"""The sparse families' C layouts (structmat/speed_c/sparse_plan.h): chunks of up to 16 values within 64 columns
(AVX-512), CSR with 16-bit column indices, and the file's int32 CSR beyond 65536 columns, each checked against
``to_dense()`` on shapes that hit its loops' tails, empty rows and the window clamped at the last 64 columns."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from structmat.matrices.lowrank_sparse import LowRankSparse
from structmat.matrices.sparse_product import Sparse, SparseProduct
from structmat.speed_c import time_c
from structmat.speed_c.build import SHARED_HEADER_DIR, compile_driver

from tests.speed_c._product import check


def chunk_fill(S) -> float:
    """Mean values per chunk of sparse_rows.h's chunked layout (a reading of its rule, to aim the shapes below)."""
    S = sp.csr_matrix(S)
    cols, count = S.shape[1], 0
    for i in range(S.shape[0]):
        row = S.indices[S.indptr[i]:S.indptr[i + 1]]
        p = 0
        while p < len(row):
            start, q0 = min(row[p] // 16 * 16, cols - 64), p
            while p < len(row) and p - q0 < 16 and start <= row[p] < start + 64:
                p += 1
            count += 1
    return S.nnz / max(count, 1)


def sparse_with_empty_rows(shape, density, seed):
    """A random CSR matrix whose rows have uneven lengths (0 to about 2 * density * cols), every fifth one empty."""
    rng = np.random.default_rng(seed)
    m, n = shape
    F = np.zeros(shape)
    for i in range(m):
        if i % 5 == 2:
            continue
        k = int(rng.integers(1, max(2, int(2 * density * n))))
        F[i, rng.choice(n, min(k, n), replace=False)] = rng.standard_normal(min(k, n))
    return sp.csr_matrix(F)


# (shape, density): chunks (dense enough, 200 columns: windows clamped at column 136), 16-bit CSR (under 64 columns;
# and too sparse to fill chunks), int32 CSR (over 65536 columns)
CHUNKS, SHORT, SHORT_SPARSE, WIDE = ((37, 200), 0.45), ((45, 50), 0.6), ((30, 300), 0.02), ((6, 70_001), 0.0004)


@pytest.mark.parametrize("shape, density", [CHUNKS, SHORT, SHORT_SPARSE, WIDE],
                         ids=["chunks", "short", "short_sparse", "int32"])
def test_sparse_layouts_match_to_dense(shape, density, driver, tmp_path, rng):
    S = sparse_with_empty_rows(shape, density, seed=3)
    if shape[1] >= 64:
        assert (chunk_fill(S) >= 6.5) == (shape == CHUNKS[0])  # the shapes hit the layouts they are named after
    y = check(Sparse(S), driver, tmp_path, rng)
    assert not y[2::5].any()


@settings(max_examples=20)
@given(m=st.integers(1, 40), n=st.integers(1, 260), density=st.sampled_from([0.02, 0.1, 0.3, 0.7]),
       seed=st.integers(0, 2**16))
def test_sparse_matches_to_dense_for_any_shape(m, n, density, seed, driver, tmp_path_factory):
    """Around the 64-column window and the 16/8-value runs: every layout's edges on random shapes and densities."""
    S = sparse_with_empty_rows((m, n), density, seed)
    check(Sparse(S), driver, tmp_path_factory.mktemp("c"), np.random.default_rng(seed))


def test_sparse_product_factors_in_different_layouts(driver, tmp_path, rng):
    """S_1 (45 x 200, full enough for chunks) S_2 (200 x 30: 16-bit CSR) S_3 (30 x 70001: int32 CSR)."""
    factors = [sparse_with_empty_rows((45, 200), 0.45, 1), sparse_with_empty_rows((200, 30), 0.3, 2),
               sp.random(30, 70_001, density=0.001, random_state=4, format="csr")]
    assert chunk_fill(factors[0]) >= 6.5
    check(SparseProduct(factors), driver, tmp_path, rng)


@pytest.mark.parametrize("shape, density", [CHUNKS, SHORT, WIDE], ids=["chunks", "short", "int32"])
def test_lowrank_sparse_layouts_match_to_dense(shape, density, driver, tmp_path, rng):
    S = sparse_with_empty_rows(shape, density, seed=5)
    U, V = rng.standard_normal((shape[0], 2)), rng.standard_normal((shape[1], 2))
    check(LowRankSparse(U, V, S), driver, tmp_path, rng)


def test_build_without_vector_extensions_agrees(driver, tmp_path, rng):
    """-DSM_NO_VECTOR_EXTENSIONS with -march=native: no chunks, the plain 16-bit CSR loop; same products."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler 'cc' on PATH")
    plain = compile_driver(cache_dir=tmp_path / "cache", flags="-O3 -march=native -DSM_NO_VECTOR_EXTENSIONS")
    for M in (Sparse(sparse_with_empty_rows(*CHUNKS, seed=6)),
              SparseProduct([sparse_with_empty_rows((45, 200), 0.45, 7), sparse_with_empty_rows((200, 50), 0.6, 8)])):
        x = rng.standard_normal(M.shape[1])
        outputs = [time_c(M, x, binary=b, work_dir=tmp_path, warmup=0, repeats=1, min_sample_ns=0)["output"]
                   for b in (driver, plain)]
        np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5 * np.abs(outputs[0]).max())


def test_chunk_threshold_is_the_layers_one():
    """sparse_rows.h's SM_CHUNK_MIN_FILL is the torch layers' CHUNK_MIN_FILL."""
    from structmat.layers.sparse_product import CHUNK_MIN_FILL

    text = (Path(SHARED_HEADER_DIR) / "sparse_rows.h").read_text()
    assert float(re.search(r"#define SM_CHUNK_MIN_FILL ([0-9.]+)", text).group(1)) == CHUNK_MIN_FILL
