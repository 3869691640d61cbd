"""The compiled sparse kernels of the inference fast path: the row, chunk and panel products against dense products
(shapes off the 8-value, 16-lane, 32-column and 64-row grids, empty rows, full rows), the layers' choice between
them (one call per forward: factors, low-rank part and bias), thread safety, and torch's CSR product when no
compiled library is available."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse
import torch

from structmat.layers import native
from structmat.layers.lowrank_sparse import LowRankSparseLinear
from structmat.layers.sparse_product import PANEL_MIN_BATCH, ROWS_MAX_BATCH, SparseLinear, SparseProductLinear
from structmat.matrices.sparse_product import SparseProduct

from tests.layers._unaligned import assert_unaligned_inputs_match

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def library():
    library = native.sparse_library()
    if library is None:
        pytest.skip("no C compiler: the layers use torch's CSR kernels (tested below)")
    return library


def _random_csr(rows, cols, density, seed):
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((rows, cols)).astype(np.float32) * (rng.random((rows, cols)) < density)
    dense[rows // 2] = 0.0  # an empty row
    return scipy.sparse.csr_array(dense)


@pytest.mark.parametrize("rows, cols, density", [(37, 53, 0.3), (64, 16, 0.9), (5, 200, 0.05), (9, 40, 1.0),
                                                 (33, 150, 0.3), (20, 64, 0.7)])
@pytest.mark.parametrize("batch", [1, 5, 70])
def test_row_and_panel_kernels_match_the_dense_product(library, rows, cols, density, batch, rng):
    S = _random_csr(rows, cols, density, seed=rows)
    crow, col = torch.from_numpy(S.indptr.astype(np.int32)), torch.from_numpy(S.indices.astype(np.int32))
    values = torch.from_numpy(S.data.copy())
    x = torch.from_numpy(rng.standard_normal((batch, cols)).astype(np.float32))
    expected = x.double().numpy() @ S.toarray().astype(np.float64).T
    tol = 1e-5 * max(np.abs(expected).max(), 1.0)
    y = torch.full((batch, rows), np.nan, dtype=torch.float32)
    native.csr_rows(library, crow, S.indices.astype(np.uint16), values, x, y)
    np.testing.assert_allclose(y.numpy(), expected, atol=tol)
    y = torch.full((batch, rows), np.nan, dtype=torch.float32)
    scratch = native.aligned_scratch(native.PANEL_ROWS * (rows + cols))
    assert scratch.ctypes.data % 64 == 0
    native.csr_panels(library, crow, col, values, cols, x, y, scratch)
    np.testing.assert_allclose(y.numpy(), expected, atol=tol)
    plan = native.chunk_plan(library, crow, col, values, cols)
    if plan is None:  # built without AVX-512, or fewer than 64 columns
        assert cols < 64 or not library.sm_chunks_available()
        return
    chunk_ptr, window, lanes, padded = plan[0]
    assert chunk_ptr[-1] == window.size and padded.size == 16 * window.size and padded.ctypes.data % 64 == 0
    assert window.min() >= 0 and window.max() <= cols - 64 and lanes.max() < 64
    y = torch.full((batch, rows), np.nan, dtype=torch.float32)
    native.chunk_rows(library, plan, x, y)
    np.testing.assert_allclose(y.numpy(), expected, atol=tol)
    assert native.chunk_plan(library, crow, col, values, cols, min_fill=S.nnz / window.size + 0.1) is None


def _product(seed=0):
    factors = [_random_csr(40, 72, 0.8, seed), _random_csr(72, 50, 0.1, seed + 1)]
    return SparseProduct(factors)


@pytest.mark.parametrize("native_library", [True, False])
@pytest.mark.parametrize("batch", [ROWS_MAX_BATCH, ROWS_MAX_BATCH + 4, PANEL_MIN_BATCH + 3])
def test_layers_fast_path_with_and_without_the_compiled_kernels(native_library, batch, rng, monkeypatch):
    if not native_library:
        monkeypatch.setitem(native._LIBRARY, "sparse", None)
    M = _product()
    layer = SparseProductLinear.from_matrix(M, rng.standard_normal(40))
    x = torch.from_numpy(rng.standard_normal((batch, 50)).astype(np.float32))
    expected = x.double().numpy() @ M.to_dense().T + layer.bias.detach().double().numpy()
    with torch.inference_mode():
        y = layer(x)
    assert y.shape == (batch, 40) and y.is_contiguous()
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-5 * np.abs(expected).max())
    if native_library and native.sparse_library().sm_chunks_available():  # the dense factor chunked, the other not
        assert [f.chunks(native.sparse_library()) is not None for f in layer._fast_factors()] == [False, True]


def test_the_compiled_kernels_can_be_switched_off(monkeypatch):
    monkeypatch.delitem(native._LIBRARY, "sparse", raising=False)
    monkeypatch.setenv("STRUCTMAT_NATIVE", "0")
    assert native.sparse_library() is None


def test_row_kernel_follows_value_updates(rng):
    layer = SparseLinear(50, 40, share=0.5, seed=3)
    x = torch.from_numpy(rng.standard_normal((1, 50)).astype(np.float32))
    with torch.no_grad():
        layer(x)
        layer.values[0].mul_(-2.0)
        expected = layer._weight_product(x) + layer.bias
        np.testing.assert_allclose(layer(x).numpy(), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(rank=3, nnz=400), dict(rank=0, nnz=400), dict(rank=3, nnz=0)])
@pytest.mark.parametrize("batch", [1, ROWS_MAX_BATCH, PANEL_MIN_BATCH + 40])
def test_lowrank_sparse_layer_runs_both_parts_in_the_compiled_call(kwargs, batch, rng):
    layer = LowRankSparseLinear(50, 40, seed=1, **kwargs)
    x = torch.from_numpy(rng.standard_normal((batch, 50)).astype(np.float32))
    expected = x.double().numpy() @ layer.to_matrix().to_dense().T + layer.bias.detach().double().numpy()
    with torch.no_grad():
        np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5 * np.abs(expected).max())
        layer.U.mul_(2.0)  # read in place: no stale copy
        if kwargs["nnz"]:
            layer.values[0].mul_(-1.0)  # the chunked copy is rebuilt
        expected = x.double().numpy() @ layer.to_matrix().to_dense().T + layer.bias.detach().double().numpy()
        np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5 * np.abs(expected).max())


def test_fast_path_is_thread_safe(rng):
    """Scratch is per call: threads running the row and panel kernels on one layer at once get their own results."""
    M = _product()
    layer = SparseProductLinear.from_matrix(M, rng.standard_normal(40))
    inputs = [torch.from_numpy(rng.standard_normal((b, 50)).astype(np.float32)) for b in (1, 2, 70, 100) * 4]
    with torch.no_grad():
        expected = [layer(x) for x in inputs]

    def run(k):
        with torch.no_grad():
            return all(torch.equal(layer(inputs[k]), expected[k]) for _ in range(20))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(run, range(len(inputs))))


@pytest.mark.parametrize("offset", [0, 1, 5])
def test_inputs_off_cache_line_boundaries(offset, rng):
    """The row kernels copy an input row that does not start on a 64-byte boundary; results do not depend on it."""
    M = _product()
    layer = SparseProductLinear.from_matrix(M, rng.standard_normal(40))
    assert_unaligned_inputs_match(layer, M, 2, offset, rng)


@pytest.mark.parametrize("batch", [1, PANEL_MIN_BATCH + 40])
def test_layers_without_bias_on_the_compiled_path(batch, rng):
    M = _product()
    x = torch.from_numpy(rng.standard_normal((batch, 50)).astype(np.float32))
    expected = x.double().numpy() @ M.to_dense().T
    for layer in (SparseProductLinear.from_matrix(M), LowRankSparseLinear(50, 40, rank=2, nnz=300, bias=False)):
        if isinstance(layer, LowRankSparseLinear):
            expected = x.double().numpy() @ layer.to_matrix().to_dense().T
        with torch.no_grad():
            np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5 * np.abs(expected).max())


def _layer(kind, shape, density, seed):
    rng = np.random.default_rng(seed)
    if kind == "product":
        factors = [_random_csr(shape[0], 24, density, seed), _random_csr(24, shape[1], density, seed + 1)]
        return SparseProductLinear.from_matrix(SparseProduct(factors), torch.from_numpy(rng.standard_normal(shape[0])))
    S = _random_csr(*shape, density, seed)
    U, V = rng.standard_normal((shape[0], 3)), rng.standard_normal((shape[1], 3))
    if kind == "lowrank_sparse":
        from structmat.matrices.lowrank_sparse import LowRankSparse
        return LowRankSparseLinear.from_matrix(LowRankSparse(U, V, S), None)
    from structmat.matrices.sparse_product import Sparse
    return SparseLinear.from_matrix(Sparse(S), None)


@pytest.mark.parametrize("kind, shape, density", [("sparse", (37, 90), 0.5), ("sparse", (90, 37), 0.1),
                                                  ("product", (30, 50), 0.4), ("lowrank_sparse", (41, 66), 0.35)])
@pytest.mark.parametrize("batch", [PANEL_MIN_BATCH, 100])
def test_training_by_panels_matches_torchs_csr_products(library, monkeypatch, kind, shape, density, batch):
    """From PANEL_MIN_BATCH rows the training path runs the panel kernel forward and backward (the values' gradient
    from a dense product at high fill, torch's sampled product at low fill): same outputs and gradients as torch's
    CSR products to float32 rounding."""
    layer = _layer(kind, shape, density, seed=batch).float()
    x = torch.randn(batch, shape[1], generator=torch.Generator().manual_seed(0))
    grad = torch.randn(batch, shape[0], generator=torch.Generator().manual_seed(1))

    def run():
        inputs = x.clone().requires_grad_(True)
        for p in layer.parameters():
            p.grad = None
        y = layer(inputs)
        y.backward(grad)
        return y.detach(), inputs.grad, [p.grad.clone() for p in layer.parameters()]

    calls = []
    real = native.csr_panels
    monkeypatch.setattr(native, "csr_panels", lambda *a: calls.append(1) or real(*a))
    y, gx, gp = run()
    assert calls, "the panel kernel was not used for training"
    monkeypatch.setattr(native, "sparse_library", lambda: None)
    y0, gx0, gp0 = run()
    scale = float(y0.abs().max())
    assert torch.allclose(y, y0, rtol=1e-5, atol=1e-5 * scale)
    assert torch.allclose(gx, gx0, rtol=1e-5, atol=1e-5 * float(gx0.abs().max()))
    for a, b in zip(gp, gp0):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
