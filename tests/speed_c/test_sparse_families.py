"""C kernels of block_sparse (every specialised block shape, the generic loop, partial edge blocks, the build
without vector extensions) and lowrank_sparse (empty parts)."""

import shutil

import numpy as np
import pytest

from structmat.matrices.block_sparse import BlockSparse
from structmat.matrices.lowrank_sparse import LowRankSparse
from structmat.speed_c import time_c
from structmat.speed_c.build import compile_driver

from tests.speed_c._product import check

SPECIALISED = [(br, bc) for bc in (4, 8, 16) for br in (1, 2, 4, 8)]
GENERIC = [(1, 1), (3, 5), (2, 12)]


@pytest.mark.parametrize("block_shape", SPECIALISED + GENERIC)
def test_block_shapes_with_partial_edges(block_shape, driver, tmp_path, rng):
    """37 x 45 leaves a partial last block-row and block-column for every shape but 1 x 1; 7 blocks per
    block-row on average exercise the unrolled loop and its remainder."""
    for shape in ((37, 45), (64, 64)):
        check(BlockSparse.random(shape, block_shape=block_shape, density=0.6, seed=5), driver, tmp_path, rng)


def test_empty_block_rows_give_zeros(driver, tmp_path, rng):
    keep = np.zeros((4, 3), dtype=bool)
    keep[2, 1] = True
    M = BlockSparse.from_mask(np.ones((8, 24)), (2, 8), keep)
    y = check(M, driver, tmp_path, rng)
    assert not y[:4].any() and not y[6:].any()


def test_build_without_vector_extensions_agrees(driver, tmp_path, rng):
    """The plain-C path (-DSM_NO_VECTOR_EXTENSIONS) does the same arithmetic in the same order."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler 'cc' on PATH")
    plain = compile_driver(cache_dir=tmp_path / "cache", flags="-O2 -DSM_NO_VECTOR_EXTENSIONS")
    for block_shape in ((1, 8), (4, 16), (3, 5)):
        M = BlockSparse.random((37, 45), block_shape=block_shape, density=0.6, seed=6)
        x = rng.standard_normal(45)
        outputs = [time_c(M, x, binary=b, work_dir=tmp_path, warmup=0, repeats=1, min_sample_ns=0)["output"]
                   for b in (driver, plain)]
        np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6, atol=1e-6 * np.abs(outputs[0]).max())


@pytest.mark.parametrize("rank, density", [(0, 0.2), (3, 0.0), (2, 0.1)])
def test_lowrank_sparse_with_an_empty_part(rank, density, driver, tmp_path, rng):
    base = LowRankSparse.random((30, 20), rank=max(rank, 1), density=max(density, 0.05), seed=1)
    S = base.sparse_part() if density else np.zeros((30, 20))
    M = LowRankSparse(base.U[:, :rank], base.V[:, :rank], S)
    assert (M.rank, M.nnz > 0) == (rank, density > 0)
    check(M, driver, tmp_path, rng)


@pytest.mark.parametrize("M", [BlockSparse.random((11, 21), block_shape=(2, 8), density=0.5, seed=0),
                               LowRankSparse.random((11, 21), rank=2, density=0.2, seed=0)],
                         ids=["block_sparse", "lowrank_sparse"])
def test_fuzzed_layer_files_never_crash_the_driver(M, driver, tmp_path):
    """Random byte changes in the metadata, index arrays and values: exit 0 or 2 with one line, never a crash."""
    import subprocess

    from structmat.speed_c import write_input, write_layer

    good = write_layer(M, tmp_path / "good.smlayer").read_bytes()
    inp = write_input(np.ones(21), tmp_path / "x.f32")
    path = tmp_path / "fuzz.smlayer"
    rng = np.random.default_rng(1)
    for trial in range(40):
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(64, len(data)))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
        result = subprocess.run([str(driver), str(path), str(inp), "--warmup", "0", "--repeats", "1"],
                                capture_output=True, text=True)
        assert result.returncode in (0, 2), (trial, result.returncode, result.stderr)
