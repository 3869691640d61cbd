"""Mutated C layer files through the driver, built with AddressSanitizer and UBSan, for every family with a kernel.

A changed header field, metadata value or array descriptor must be refused with one error line (exit code 2), or
give exactly the original output (a change the format ignores); a changed value in a float array is another valid
layer; a changed integer (an index, a pointer) must be refused or computed without any invalid memory access.
A crash, a sanitizer report or a traceback is a defect."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from structmat.families import FAMILIES
from structmat.speed_c import LayerFileError, run_driver, write_input, write_layer
from structmat.speed_c.build import compile_driver
from structmat.speed_c.layer_format import ALIGN, HEADER_BYTES, read_header
from structmat.speed_c.writers import WRITERS

from .._fuzz_settings import FAST, SLOW
from .outcomes import Recorder, judge_message

SANITIZED_FLAGS = "-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"
C_FAMILIES = [name for name in WRITERS]
SHAPE = (24, 18)
_HEADER_FIELDS = {  # name: (offset, struct format)
    "version": (8, "<I"), "family_id": (12, "<I"), "dtype": (16, "<I"), "flags": (20, "<I"), "m": (24, "<Q"),
    "n": (32, "<Q"), "n_meta": (40, "<I"), "n_arrays": (44, "<I"), "file_size": (48, "<Q"), "reserved": (56, "<Q"),
}


@pytest.fixture(scope="module")
def sanitized_driver(monkeypatch_module):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler 'cc' on PATH")
    try:
        return compile_driver(flags=SANITIZED_FLAGS)  # cached by sources and flags: compiled once per machine
    except Exception as exc:  # noqa: BLE001 - a compiler without the sanitizers: nothing to run the files under
        pytest.skip(f"the C compiler cannot build with AddressSanitizer: {exc}")


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    # leaks are not what this looks for (and LeakSanitizer needs ptrace); any other report exits with code 99
    mp.setenv("ASAN_OPTIONS", "detect_leaks=0:exitcode=99:abort_on_error=0")
    mp.setenv("UBSAN_OPTIONS", "exitcode=99:print_stacktrace=1")
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def originals(tmp_path_factory, sanitized_driver):
    """Per family: the layer file's bytes, its array table, and the driver's output on a fixed input."""
    directory = tmp_path_factory.mktemp("layers")
    x = np.random.default_rng(0).standard_normal(SHAPE[1])
    inp = write_input(x, directory / "x.f32")
    out = {}
    for family in C_FAMILIES:
        M = FAMILIES[family].matrix_class.random(SHAPE, seed=2)
        path = write_layer(M, directory / f"{family}.smlayer", bias=np.ones(SHAPE[0]))
        run_driver(sanitized_driver, path, inp, warmup=0, repeats=1, min_sample_ns=0,
                   output_path=directory / f"{family}.out")
        header = read_header(path)
        out[family] = (path.read_bytes(), _array_spans(path.read_bytes(), header),
                       np.fromfile(directory / f"{family}.out", dtype="<f4"))
    return inp, out


def _array_spans(data: bytes, header) -> list[tuple[int, int, int]]:
    """``(start, end, dtype code)`` of each array's bytes, bias included."""
    n_meta = len(header.meta)
    count = len(header.array_counts) + header.has_bias
    table = HEADER_BYTES + 8 * n_meta
    offset = table + 16 * count
    offset += -offset % ALIGN
    spans = []
    for k in range(count):
        code, _, elements = struct.unpack_from("<IIQ", data, table + 16 * k)
        spans.append((offset, offset + 4 * elements, code))
        offset += 4 * elements
        offset += -offset % ALIGN
    return spans


@st.composite
def layer_mutations(draw, original: bytes, spans):
    """``(bytes, kind, label)``; kind is "same" (refuse, or the original output), "valid" (refuse or any clean
    run) or "refuse"."""
    data = bytearray(original)
    kind = draw(st.sampled_from(["header", "header", "meta", "descriptor", "float", "int", "truncate", "extend",
                                 "magic", "random-bytes"]))
    fix_size = draw(st.booleans())
    if kind == "header":
        name = draw(st.sampled_from(sorted(_HEADER_FIELDS)))
        offset, fmt = _HEADER_FIELDS[name]
        bits = struct.calcsize(fmt) * 8
        value = draw(st.one_of(st.sampled_from([0, 1, 2, 3, 2**31 - 1, 2**31, 2**32 - 1, 2**bits - 1]),
                               st.integers(0, 2**bits - 1)))
        struct.pack_into(fmt, data, offset, value)
        label, expect = f"header {name} = {value}", "same"
    elif kind == "meta":
        n_meta = struct.unpack_from("<I", data, 40)[0]
        if n_meta == 0:
            return bytes(data), "same", "no metadata to change"
        k = draw(st.integers(0, n_meta - 1))
        value = draw(st.one_of(st.sampled_from([-1, 0, 1, 2**31, 2**62, -2**63]), st.integers(-2**63, 2**63 - 1)))
        struct.pack_into("<q", data, HEADER_BYTES + 8 * k, value)
        label, expect = f"meta[{k}] = {value}", "same"
    elif kind == "descriptor":
        n_meta = struct.unpack_from("<I", data, 40)[0]
        k = draw(st.integers(0, len(spans) - 1))
        at = HEADER_BYTES + 8 * n_meta + 16 * k
        field = draw(st.sampled_from(["dtype", "reserved", "count"]))
        if field == "count":
            value = draw(st.one_of(st.sampled_from([0, 1, 2**31, 2**62, 2**64 - 1]), st.integers(0, 10**6)))
            struct.pack_into("<Q", data, at + 8, value)
        else:
            value = draw(st.sampled_from([0, 1, 2, 3, 2**32 - 1]))
            struct.pack_into("<I", data, at + (0 if field == "dtype" else 4), value)
        label, expect = f"descriptor {k} {field} = {value}", "same"
    elif kind in ("float", "int"):
        code = 1 if kind == "float" else 2
        candidates = [s for s in spans if s[2] == code and s[1] > s[0]]
        if not candidates:
            return bytes(data), "same", f"no {kind} array"
        start, end, _ = draw(st.sampled_from(candidates))
        element = draw(st.integers(0, (end - start) // 4 - 1))
        if kind == "float":
            value = draw(st.floats(width=32))
            struct.pack_into("<f", data, start + 4 * element, value)
            expect = "valid" if np.isfinite(value) else "valid-nonfinite"
        else:
            value = draw(st.one_of(st.sampled_from([-1, -2**31, 2**31 - 1, 0, 1]), st.integers(-2**31, 2**31 - 1)))
            struct.pack_into("<i", data, start + 4 * element, value)
            expect = "valid"
        label = f"{kind} array at byte {start} element {element} = {value}"
    elif kind == "truncate":
        keep = draw(st.integers(0, len(data) - 1))
        data = data[:keep]
        label, expect = f"truncated to {keep} bytes", "refuse"
    elif kind == "extend":
        data += bytes(draw(st.integers(1, 128)))
        label, expect = "extended with zeros", "same"
    elif kind == "magic":
        data[draw(st.integers(0, 7))] ^= 1 << draw(st.integers(0, 7))
        label, expect = "magic damaged", "refuse"
    else:
        at = draw(st.integers(0, len(data) - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))
        data[at:at + len(chunk)] = chunk
        label, expect = f"{len(chunk)} random bytes at {at}", "valid"
    if fix_size and len(data) >= HEADER_BYTES and kind not in ("header",):
        struct.pack_into("<Q", data, 48, len(data))  # a consistent size field: the deeper checks must catch it
        label += " (size field fixed up)"
    return bytes(data), expect, label


def _run_case(request, tmp_path, sanitized_driver, originals, family, data):
    recorder = Recorder(request, "C layer files")
    inp, table = originals
    original, spans, reference = table[family]
    content, expect, label = data.draw(layer_mutations(original, spans), label="mutation")
    path = tmp_path / "layer.smlayer"
    path.write_bytes(content)
    case = f"{family}: {label}"
    output = tmp_path / "y.out"
    if output.exists():
        output.unlink()

    def run():
        run_driver(sanitized_driver, path, inp, warmup=0, repeats=1, min_sample_ns=0, output_path=output,
                   timeout=60)
        return np.fromfile(output, dtype="<f4")

    def check(y):
        if y.shape != reference.shape and expect in ("same",):
            return f"output of {y.size} values, the original has {reference.size}"
        if expect == "same" and not np.array_equal(y, reference):
            return "a changed header, metadata or table was accepted and changed the output"
        if expect == "refuse":
            return "a file that must be refused was run"
        if expect == "valid" and not np.isfinite(y).all() and content == original:
            return "non-finite output"
        return None

    try:
        y = run()
    except LayerFileError as exc:
        kind, detail = judge_message(exc)
        recorder.record(case, kind, detail)
        return
    except RuntimeError as exc:  # a crash, a sanitizer report (exit 99) or a timeout
        recorder.record(case, "defect", str(exc))
        return
    problem = check(y)
    recorder.record(case, "defect" if problem else "correct result", problem or "")


@pytest.mark.parametrize("family", C_FAMILIES)
@settings(max_examples=FAST)
@given(data=st.data())
def test_mutated_layer_file(request, tmp_path, sanitized_driver, originals, family, data):
    _run_case(request, tmp_path, sanitized_driver, originals, family, data)


@pytest.mark.slow
@pytest.mark.parametrize("family", C_FAMILIES)
@settings(max_examples=SLOW)
@given(data=st.data())
def test_mutated_layer_file_long(request, tmp_path, sanitized_driver, originals, family, data):
    _run_case(request, tmp_path, sanitized_driver, originals, family, data)
