"""Every family with a C kernel: the C product equals NumPy's, on random inputs and the conformance shapes."""

import numpy as np
import pytest

from structmat.families import FAMILIES
from structmat.speed_c import WRITERS, read_header, run_driver, time_c, write_input, write_layer
from structmat.speed_c.build import kernel_names
from structmat.speed_c.runner import TOLERANCE

from ..conftest import SHAPES

C_FAMILIES = sorted(WRITERS)


def example(family, shape, seed=0):
    return FAMILIES[family].matrix_class.random(shape, seed=seed)


def test_every_writer_has_a_kernel_and_registered_family(driver):
    assert sorted(kernel_names()) == C_FAMILIES
    assert set(WRITERS) <= set(FAMILIES)
    ids = [w.family_id for w in WRITERS.values()]
    assert len(set(ids)) == len(ids) and min(ids) >= 1
    import subprocess

    listed = subprocess.run([str(driver), "--list"], capture_output=True, text=True, check=True).stdout.split("\n")
    compiled = {name: int(fid) for fid, name in (line.split() for line in listed if line)}
    assert compiled == {name: w.family_id for name, w in WRITERS.items()}


@pytest.mark.parametrize("family", C_FAMILIES)
@pytest.mark.parametrize("shape", SHAPES + [(64, 80), (130, 7)])
def test_c_matches_numpy(family, shape, driver, rng, tmp_path):
    M = example(family, shape, seed=shape[0])
    x = rng.standard_normal(shape[1])
    result = time_c(M, x, binary=driver, work_dir=tmp_path, warmup=1, repeats=3, min_sample_ns=0)
    y = result["output"]
    expected = M.to_dense() @ x.astype(np.float32).astype(np.float64)
    assert y.dtype == np.float32 and y.shape == (shape[0],)
    assert np.linalg.norm(y - expected) <= 2 * TOLERANCE * np.linalg.norm(expected)
    assert result["relative_error"] < TOLERANCE
    assert result["checksum"] == pytest.approx(float(np.sum(y, dtype=np.float64)), rel=1e-9, abs=1e-9)
    assert 0 < result["min_ns"] <= result["median_ns"] <= result["max_ns"]


@pytest.mark.parametrize("family", C_FAMILIES)
def test_bias_is_added(family, driver, rng, tmp_path):
    M = example(family, (33, 21), seed=7)
    x, bias = rng.standard_normal(21), rng.standard_normal(33)
    y = time_c(M, x, bias=bias, binary=driver, work_dir=tmp_path, warmup=0, repeats=1)["output"]
    np.testing.assert_allclose(y, M.to_dense() @ x + bias, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", C_FAMILIES)
def test_header_round_trip(family, tmp_path):
    M = example(family, (12, 9), seed=3)
    path = write_layer(M, tmp_path / "M.smlayer", bias=np.zeros(12))
    header = read_header(path)
    assert header.family_id == WRITERS[family].family_id and header.shape == (12, 9) and header.has_bias
    assert header.file_size == path.stat().st_size and header.file_size % 64 == 0
    # float arrays hold exactly the matrix's stored numbers
    float_counts = sum(c for c, a in zip(header.array_counts, WRITERS[family].layout(M)[1])
                       if np.asarray(a).dtype.kind == "f")
    assert float_counts == M.nparams


def test_driver_check_mode(driver, tmp_path):
    import json
    import subprocess

    M = example("lowrank", (10, 6))
    path = write_layer(M, tmp_path / "M.smlayer")
    out = subprocess.run([str(driver), "--check", str(path)], capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    assert info["family"] == "lowrank" and (info["m"], info["n"]) == (10, 6) and info["bias"] is False


def test_output_dump_is_the_product(driver, rng, tmp_path):
    M = example("dense", (5, 4))
    x = rng.standard_normal(4)
    layer, inp = write_layer(M, tmp_path / "d.smlayer"), write_input(x, tmp_path / "x.f32")
    result = run_driver(driver, layer, inp, warmup=0, repeats=1, output_path=tmp_path / "y.f32")
    y = np.fromfile(tmp_path / "y.f32", dtype="<f4")
    np.testing.assert_allclose(y, M.W @ x.astype(np.float32), rtol=1e-5)
    assert result["repeats"] == 1 and result["family"] == "dense"
