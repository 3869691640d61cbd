"""Saved-matrix files for the fuzz suite: one fitted matrix per registered family, and mutations of its file."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

import structmat
from structmat.families import FAMILIES

FAMILY_NAMES = list(FAMILIES)
#: Big enough for hierarchical partitions, several SSS stages and stored permutations; small enough to fit fast.
SHAPE = (40, 36)


#: Options that give the fits all their optional arrays (stored permutations, several leaves) at this size.
_RICH = {"hodlr": {"depth": 2, "ordering": "bisection"}, "hedlr": {"depth": 2, "ordering": "bisection"},
         "hmatrix": {"ordering": "bisection"}}


def fitted_matrix(family: str):
    """The family's fit of a fixed matrix with some structure (a low-rank part plus noise), at share 0.5."""
    if family == "ldr":  # its fit is slow to start (torch); a random LDR has every array a fitted one has
        return FAMILIES[family].matrix_class.random(SHAPE, rank=3, operator_noise=0.1, seed=7)
    rng = np.random.default_rng(7)
    W = rng.standard_normal((SHAPE[0], 4)) @ rng.standard_normal((4, SHAPE[1])) + 0.3 * rng.standard_normal(SHAPE)
    return structmat.approximate(W, family, 1.0 if family == "dense" else 0.5, **_RICH.get(family, {}))


def read_entries(path) -> tuple[dict, dict]:
    """The arrays and the parsed meta of a saved matrix (read with NumPy directly, not with the code under test)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "meta"}
        meta = json.loads(str(data["meta"][()]))
    return arrays, meta


def write_entries(path, arrays: dict, meta) -> None:
    entries = dict(arrays)
    if meta is not None:
        entries["meta"] = meta if isinstance(meta, np.ndarray) else np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez(buffer, **entries)
    Path(path).write_bytes(buffer.getvalue())


@dataclass(frozen=True)
class Mutation:
    """A change to a saved file and what loading it may give: ``same`` (the original matrix, or an error),
    ``close`` (the original up to rounding to a smaller float type), ``valid`` (any matrix whose products agree
    with its dense form: the edit describes another valid matrix) or ``refuse`` (only an error is right)."""

    name: str
    expect: str


@dataclass(frozen=True)
class Mutated:
    """The mutated file's bytes (kept out of the repr hypothesis prints) and the mutation."""

    content: bytes = field(repr=False)
    mutation: Mutation


JUNK = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=5), st.none(), st.booleans(), st.lists(st.integers(-3, 3), max_size=3),
                 st.dictionaries(st.text(max_size=3), st.integers(-2, 2), max_size=2))


@dataclass(frozen=True)
class Original:
    """A saved file's bytes, arrays and meta (the bytes and arrays kept out of the repr hypothesis prints)."""

    content: bytes = field(repr=False)
    arrays: dict = field(repr=False)
    meta: dict


def mutations(original: Original):
    """Draw one mutation of a saved file, as :class:`Mutated`."""
    return _mutations(original).map(lambda pair: Mutated(*pair))


@st.composite
def _mutations(draw, source: Original):
    original, arrays, meta = source.content, source.arrays, source.meta
    names = sorted(arrays)
    floats = [k for k in names if arrays[k].dtype.kind == "f" and arrays[k].size]
    ints = [k for k in names if arrays[k].dtype.kind in "iu" and arrays[k].size]
    kinds = ["truncate", "flip", "append", "drop", "rename", "extra_axis", "dtype", "meta_key", "meta_value",
             "meta_json", "swap"]
    kinds += ["nonfinite"] if floats else []
    kinds += ["index"] if ints else []
    kind = draw(st.sampled_from(kinds))
    arrays = dict(arrays)
    new_meta = json.loads(json.dumps(meta))
    if kind == "truncate":
        keep = draw(st.integers(0, len(original) - 1))
        return original[:keep], Mutation(f"truncated to {keep} of {len(original)} bytes", "refuse")
    if kind == "flip":
        at = draw(st.integers(0, len(original) - 1))
        bit = draw(st.integers(0, 7))
        data = bytearray(original)
        data[at] ^= 1 << bit
        return bytes(data), Mutation(f"bit {bit} of byte {at} flipped", "same")
    if kind == "append":
        tail = draw(st.binary(min_size=1, max_size=64))
        return original + tail, Mutation(f"{len(tail)} bytes appended", "same")
    if kind == "drop":
        name = draw(st.sampled_from(names + ["meta"]))
        if name == "meta":
            new_meta = None
        else:
            del arrays[name]
        return _encode(arrays, new_meta), Mutation(f"{name} dropped", "refuse")
    if kind == "rename":
        name = draw(st.sampled_from(names))
        arrays["renamed_" + name] = arrays.pop(name)
        return _encode(arrays, new_meta), Mutation(f"{name} renamed", "refuse")
    if kind == "extra_axis":
        name = draw(st.sampled_from(names))
        where = draw(st.sampled_from(["front", "back", "two"]))
        a = arrays[name]
        arrays[name] = a[None] if where == "front" else (a[..., None] if where == "back" else np.stack([a, a]))
        return _encode(arrays, new_meta), Mutation(f"{name} given an extra axis ({where})", "refuse")
    if kind == "dtype":
        name = draw(st.sampled_from(names))
        target = draw(st.sampled_from(["complex128", "complex-imag", "float16", "float32", "int8", "int64", "uint64",
                                       "bool", "U4", "S4", "datetime64[s]", "float64"]))
        a = arrays[name]
        if target == "complex-imag":
            arrays[name] = a.astype(np.complex128) + 1j
            expect = "refuse"
        else:
            try:
                with np.errstate(all="ignore"):
                    arrays[name] = a.astype(target)
            except (TypeError, ValueError):
                arrays[name] = np.zeros(a.shape, dtype=target)
            lossless = a.dtype.kind == "f" and target in ("float64", "float32", "float16")
            expect = "close" if lossless else "same"
        return _encode(arrays, new_meta), Mutation(f"{name} {a.dtype} stored as {target}", expect)
    if kind == "nonfinite":
        name = draw(st.sampled_from(floats))
        a = arrays[name].copy()
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        arrays[name] = a
        return _encode(arrays, new_meta), Mutation(f"NaN or Inf in {name}", "refuse")
    if kind == "index":
        name = draw(st.sampled_from(ints))
        a = arrays[name].copy()
        at = draw(st.integers(0, a.size - 1))
        value = draw(st.sampled_from([-1, -2**31, a.size, a.size + 1, int(a.max()) + 1, 2**31 - 1, 2**31,
                                      int(np.iinfo(a.dtype).max)]))
        try:
            a.flat[at] = value
        except (OverflowError, ValueError):
            a = a.astype(np.int64)
            a.flat[at] = value
        arrays[name] = a
        return _encode(arrays, new_meta), Mutation(f"{name}[{at}] set to {value}", "same")
    if kind == "swap":  # two arrays exchanged under each other's names
        if len(names) < 2:
            return _encode(arrays, new_meta), Mutation("nothing swapped", "same")
        a, b = draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
        arrays[a], arrays[b] = arrays[b], arrays[a]
        return _encode(arrays, new_meta), Mutation(f"{a} and {b} swapped", "valid")
    if kind == "meta_json":
        choice = draw(st.sampled_from(["invalid", "list", "number", "2d", "bytes", "deep"]))
        raw = {"invalid": np.array("{not json"), "list": np.array("[1, 2]"), "number": np.array("3"),
               "2d": np.array([[json.dumps(meta)]]), "bytes": np.array(json.dumps(meta).encode()),
               "deep": np.array("[" * 100_000 + "]" * 100_000)}[choice]
        return _encode(arrays, raw), Mutation(f"meta replaced ({choice})", "refuse")
    if kind == "meta_key":
        key = draw(st.sampled_from(sorted(new_meta) + ["unknown_key"]))
        if key in new_meta and draw(st.booleans()):
            del new_meta[key]
            return _encode(arrays, new_meta), Mutation(f"meta key {key!r} removed", "same")
        new_meta[key if key == "unknown_key" else "x_" + key] = 1
        return _encode(arrays, new_meta), Mutation(f"meta key {key!r} added or renamed", "refuse")
    # meta_value
    key = draw(st.sampled_from(sorted(new_meta)))
    special = {"family": st.sampled_from(FAMILY_NAMES + ["", "Lowrank", "../x"]),
               "shape": st.sampled_from([[SHAPE[1], SHAPE[0]], [SHAPE[0] + 1, SHAPE[1]], [0, SHAPE[1]], [-1, 5],
                                         [SHAPE[0]], "40x36", [40.0, 36.0], [True, 36]]),
               "dtype": st.sampled_from(["float16", "int8", "object", "float32", "complex128", "<f8"]),
               "format_version": st.sampled_from([0, 2, "1", True, 1.0, None, -1])}
    value = draw(special.get(key, JUNK))
    new_meta[key] = value
    # a hyper-parameter kept in meta (the kept block of a Toeplitz-like matrix, say) may describe another valid matrix
    return _encode(arrays, new_meta), Mutation(f"meta {key!r} set to {value!r}", "valid")


def _encode(arrays: dict, meta) -> bytes:
    buffer = io.BytesIO()
    entries = dict(arrays)
    if meta is not None:
        entries["meta"] = meta if isinstance(meta, np.ndarray) else np.array(json.dumps(meta))
    np.savez(buffer, **entries)
    return buffer.getvalue()
