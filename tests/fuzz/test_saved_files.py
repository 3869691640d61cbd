"""Mutated saved matrices, for every registered family: truncated, bit-flipped, dropped or renamed arrays, extra
axes, other dtypes, NaN/Inf, out-of-range indices, tampered meta. ``structmat.load`` and ``read_meta`` must give
a clear error or exactly the matrix the file describes; never a traceback or another matrix."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import structmat
from structmat.matrices.base import StructuredMatrix
from structmat.matrices.io import StructmatFileError, read_meta

from .._fuzz_settings import FAST, SLOW
from ._files import FAMILY_NAMES, Original, fitted_matrix, mutations, read_entries
from .outcomes import CLEAR, Recorder, judge_message

ERRORS = (StructmatFileError, FileNotFoundError)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Per family: the fitted matrix, its saved bytes, arrays and meta."""
    directory = tmp_path_factory.mktemp("saved")
    out = {}
    for family in FAMILY_NAMES:
        M = fitted_matrix(family)
        path = directory / f"{family}.npz"
        M.save(path)
        arrays, meta = read_entries(path)
        out[family] = (M, path.read_bytes(), arrays, meta)
    return out


def _check_loaded(M, original, expect: str, path):
    """None if ``M`` (loaded from the mutated file) is right, else what is wrong."""
    D, want = M.to_dense(), original.to_dense()
    meta = read_meta(path)
    if meta["family"] != M.family or meta["shape"] != list(M.shape):
        return f"loaded a {M.family} {M.shape} from a file whose meta says {meta['family']} {meta['shape']}"
    if expect != "valid" and (M.shape != original.shape or M.family != original.family):
        return f"loaded a {M.family} {M.shape} from a {original.family} {original.shape}"
    if not np.isfinite(D).all():
        return "loaded a matrix with NaN or Inf"
    if expect == "refuse":
        return "loaded a file that must be refused"
    tol = 0.0 if expect == "same" else 1e-3 * np.abs(want).max()
    if expect != "valid" and not np.allclose(D, want, rtol=0, atol=tol):
        return f"loaded another matrix (max difference {np.abs(D - want).max():.3g})"
    x = np.random.default_rng(0).standard_normal(M.shape[1])
    if not np.allclose(M @ x, D @ x, rtol=1e-9, atol=1e-9 * max(np.abs(D).max(), 1e-300)):
        return "the fast product disagrees with the dense matrix"
    if not np.allclose(StructuredMatrix.to_dense(M), D, rtol=1e-9, atol=1e-9 * max(np.abs(D).max(), 1e-300)):
        return "to_dense disagrees with the products"
    return None


def _run_case(request, originals, tmp_path, family, data):
    recorder = Recorder(request, "saved files")
    M, original, arrays, meta = originals[family]
    mutated = data.draw(mutations(Original(original, arrays, meta)))
    content, mutation = mutated.content, mutated.mutation
    path = tmp_path / f"{family}.npz"
    path.write_bytes(content)
    case = f"{family}: {mutation.name}"
    outcome = recorder.call(case, lambda: structmat.load(path), errors=ERRORS, mentions=(str(path),),
                            check=lambda loaded: _check_loaded(loaded, M, mutation.expect, path))
    if outcome.kind == CLEAR:  # structmat info reads the meta first: it must not call a refused file fine
        try:
            meta_ok = read_meta(path)
        except ERRORS as exc:
            kind, detail = judge_message(exc, (str(path),))
            assert kind == CLEAR, f"{case}: read_meta: {detail}"
        else:
            assert isinstance(meta_ok, dict)


@pytest.mark.parametrize("family", FAMILY_NAMES)
@settings(max_examples=FAST)
@given(data=st.data())
def test_mutated_saved_file(request, originals, tmp_path, family, data):
    _run_case(request, originals, tmp_path, family, data)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILY_NAMES)
@settings(max_examples=SLOW)
@given(data=st.data())
def test_mutated_saved_file_long(request, originals, tmp_path, family, data):
    _run_case(request, originals, tmp_path, family, data)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_round_trips_unmutated(originals, tmp_path, family):
    """The reference: an untouched file loads as the same matrix, byte for byte in its arrays."""
    M, original, _, _ = originals[family]
    path = tmp_path / "m.npz"
    path.write_bytes(original)
    loaded = structmat.load(path)
    assert all(np.array_equal(loaded._arrays()[k], v) for k, v in M._arrays().items())
