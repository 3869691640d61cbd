"""Clear one-line errors: a missing compiler, malformed or truncated layer files, a wrong input length."""

import struct

import numpy as np
import pytest

from structmat.matrices.lowrank import LowRank
from structmat.speed_c import (
    CompilerError, LayerFileError, compile_driver, run_driver, time_c, write_input, write_layer,
)
from structmat.speed_c.layer_format import layer_bytes


@pytest.fixture
def files(tmp_path):
    M = LowRank.random((20, 12), rank=3, seed=0)
    layer = write_layer(M, tmp_path / "M.smlayer", bias=np.ones(20))
    inp = write_input(np.ones(12), tmp_path / "x.f32")
    return layer, inp


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def test_missing_compiler(tmp_path):
    with pytest.raises(CompilerError) as exc:
        compile_driver(compiler="structmat-no-such-cc", cache_dir=tmp_path)
    assert "not found" in one_line(exc) and "structmat-no-such-cc" in str(exc.value)


def test_compiler_failure_is_one_line(tmp_path, driver):
    with pytest.raises(CompilerError) as exc:
        compile_driver(flags="-O2 -fstructmat-no-such-flag", cache_dir=tmp_path)
    assert "failed" in one_line(exc)


@pytest.mark.parametrize("keep", [0, 10, 63, 64, 100, -1])
def test_truncated_layer(files, driver, keep):
    layer, inp = files
    data = layer.read_bytes()
    layer.write_bytes(data[:keep] if keep >= 0 else data[:-4])
    with pytest.raises(LayerFileError) as exc:
        run_driver(driver, layer, inp, warmup=0, repeats=1)
    assert "truncated" in one_line(exc)


def test_truncated_after_header_rewrite(files, driver):
    """A file cut short whose header was fixed up to match: the array table check catches it."""
    layer, inp = files
    data = bytearray(layer.read_bytes()[:200])
    struct.pack_into("<Q", data, 48, len(data))
    layer.write_bytes(bytes(data))
    with pytest.raises(LayerFileError) as exc:
        run_driver(driver, layer, inp, warmup=0, repeats=1)
    assert "truncated" in one_line(exc)


@pytest.mark.parametrize(
    "offset, fmt, value, message",
    [
        (0, "<8s", b"NOTLAYER", "not a structmat layer file"),
        (8, "<I", 99, "format version 99"),
        (12, "<I", 4242, "no kernel for"),
        (16, "<I", 7, "only float32"),
        (20, "<I", 6, "unknown flag bits"),
        (24, "<Q", 0, "both sides must be"),
        (32, "<Q", 2**40, "both sides must be"),
        (40, "<I", 2**30, "metadata values"),
        (24, "<Q", 21, "the bias must be 21"),           # m no longer matches the bias
        (32, "<Q", 13, "not a valid lowrank layer"),     # n no longer matches the arrays
        (64, "<q", -3, "negative"),                       # the rank
        (64, "<q", 2**62, "overflows"),
        (64, "<q", 4, "must hold"),
        (88, "<I", 9, "dtype code 9"),                    # first array descriptor
        (88, "<I", 2, "must be float32"),
        (92, "<I", 1, "reserved"),
        (96, "<Q", 2**61, "truncated"),                   # first array's count
    ],
)
def test_corrupt_header(files, driver, offset, fmt, value, message):
    layer, inp = files
    data = bytearray(layer.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    layer.write_bytes(bytes(data))
    with pytest.raises(LayerFileError) as exc:
        run_driver(driver, layer, inp, warmup=0, repeats=1)
    assert message in one_line(exc)


def test_wrong_bias_and_array_count(tmp_path, driver):
    inp = write_input(np.ones(3), tmp_path / "x.f32")
    bad_bias = bytearray(layer_bytes(1, (2, 3), [], [np.ones(6, np.float32)], bias=np.ones(2)))
    struct.pack_into("<Q", bad_bias, 64 + 16 + 8, 1)  # bias descriptor count 2 -> 1 (file size unchanged)
    (tmp_path / "b.smlayer").write_bytes(bytes(bad_bias))
    with pytest.raises(LayerFileError) as exc:
        run_driver(driver, tmp_path / "b.smlayer", inp, warmup=0, repeats=1)
    assert "bias" in one_line(exc)
    (tmp_path / "c.smlayer").write_bytes(layer_bytes(1, (2, 3), [], [np.ones(6, np.float32)] * 2))
    with pytest.raises(LayerFileError) as exc:
        run_driver(driver, tmp_path / "c.smlayer", inp, warmup=0, repeats=1)
    assert "expected 1 arrays" in one_line(exc)


def test_wrong_input_length(files, driver, tmp_path):
    layer, _ = files
    inp = write_input(np.ones(13), tmp_path / "x13.f32")
    with pytest.raises(LayerFileError) as exc:
        run_driver(driver, layer, inp, warmup=0, repeats=1)
    assert "n = 12 float32 values" in one_line(exc)


def test_shape_mismatch_in_python(driver):
    with pytest.raises(ValueError, match=r"x must have shape \(12,\)"):
        time_c(LowRank.random((20, 12), seed=0), np.ones(11), binary=driver)


def test_missing_files_and_bad_options(files, driver, tmp_path):
    layer, inp = files
    with pytest.raises(LayerFileError, match="cannot open"):
        run_driver(driver, tmp_path / "nope.smlayer", inp)
    with pytest.raises(LayerFileError, match="--repeats must be an integer >= 1"):
        run_driver(driver, layer, inp, repeats=0)


def test_family_without_kernel_and_transposed_view():
    from structmat.matrices.base import TransposedMatrix

    class Fake(LowRank):
        family = "no-kernel-family"

    with pytest.raises(ValueError, match="has no C kernel"):
        write_layer(Fake.random((3, 4)), "unused.smlayer")
    with pytest.raises(TypeError, match="transposed view"):
        write_layer(TransposedMatrix(LowRank.random((3, 4))), "unused.smlayer")
    with pytest.raises(ValueError, match="bias must have shape"):
        layer_bytes(2, (3, 4), [1], [np.ones(4, np.float32), np.ones(3, np.float32)], bias=np.ones(4))
