"""Every registered family is deterministic by default (the same bytes twice, in another process, while another
process loads the CPU) and scale invariant: its relative error is the same for W scaled from 1e-300 to 1e300."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import structmat
from structmat.approximators.fit_guard import is_guarded
from structmat.families import FAMILIES

FAMILY_NAMES = list(FAMILIES)
#: Powers of two from about 1e-300 to 1e300: W * s is exactly W scaled, so the fit must not change at all.
BINARY_SCALES = [2.0**k for k in (-996, -333, -33, 331, 996)]
#: Powers of ten over the same range (and factors that are not powers of two): W * s is W scaled and rounded. Every
#: fit is scale-equivariant in exact arithmetic, so only rounding-level changes remain, which no fit may amplify
#: beyond 1e-9 in relative error.
DECIMAL_SCALES = [1e-300, 1e-100, 1e-10, 0.7, 3.0, 1e100, 1e300]


def weight(shape=(40, 32), seed=3):
    return np.random.default_rng(seed).standard_normal(shape)


def budget_for(family):
    return 1.0 if family == "dense" else 0.3


def saved_bytes(M, path) -> bytes:
    M.save(path)
    return path.read_bytes()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_fit_goes_through_the_guard(family):
    """Registered fits and the public fit_<family> functions share the guard (threads, scale, finite result)."""
    entry = FAMILIES[family]
    assert is_guarded(entry.fit)
    module = sys.modules[entry.fit.__module__]
    public = getattr(module, entry.fit.__name__)
    assert is_guarded(public), f"define {entry.fit.__name__} with @guarded_fit"


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_scale_invariant(family):
    """The same relative error (to 1e-12) for W scaled by powers of two from ~1e-300 to ~1e300, and to 1e-9 for
    powers of ten and other factors; never an overflow, a zero matrix or a fit worse than zero."""
    W = weight((24, 20), seed=5)
    budget = 1.0 if family == "dense" else 0.5
    reference = structmat.relative_error(W, structmat.approximate(W, family, budget))
    assert 0 <= reference < 1
    for scales, tolerance in ((BINARY_SCALES, 1e-12), (DECIMAL_SCALES, 1e-9)):
        errors = [structmat.relative_error(W * s, structmat.approximate(W * s, family, budget)) for s in scales]
        assert max(abs(e - reference) for e in errors) <= tolerance, dict(zip(scales, errors))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_scaled_matches_scaling_the_dense_matrix(family):
    M = FAMILIES[family].matrix_class.random((12, 9), seed=1)
    for factor in (4.0**-200, -0.5, 3.0, 4.0**200):
        np.testing.assert_allclose(M.scaled(factor).to_dense(), factor * M.to_dense(), rtol=1e-12,
                                   atol=1e-12 * abs(factor) * np.abs(M.to_dense()).max())
        assert type(M.scaled(factor)) is type(M)


_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import structmat
    from structmat.families import FAMILIES
    W = np.load(sys.argv[1])
    for family in FAMILIES:
        structmat.approximate(W, family, 1.0 if family == "dense" else 0.3).save(f"{sys.argv[2]}/{family}.npz")
""")


@pytest.fixture
def busy_core():
    """Another process keeping a core busy for the duration of the test."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield
    busy.kill()
    busy.wait()


def test_deterministic_under_load(tmp_path, busy_core):
    """Every family fitted twice while another process loads the CPU: the saved files are byte-identical (default
    options: no wall-clock limit, fixed seeds, one thread)."""
    W = weight()
    for family in FAMILY_NAMES:
        first = saved_bytes(structmat.approximate(W, family, budget_for(family)), tmp_path / "first.npz")
        second = saved_bytes(structmat.approximate(W, family, budget_for(family)), tmp_path / "second.npz")
        assert first == second, f"{family}: two fits differ"


@pytest.mark.slow
def test_deterministic_in_a_fresh_process_under_load(tmp_path, busy_core):
    """The same fits in a fresh interpreter (another hash seed, other import order) give the same bytes."""
    W = weight()
    np.save(tmp_path / "W.npy", W)
    child = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "W.npy"), str(tmp_path)],
                           capture_output=True, text=True, timeout=900)
    assert child.returncode == 0, child.stderr[-2000:]
    for family in FAMILY_NAMES:
        here = saved_bytes(structmat.approximate(W, family, budget_for(family)), tmp_path / "here.npz")
        assert (tmp_path / f"{family}.npz").read_bytes() == here, f"{family}: the other process differs"


def test_relative_error_neither_overflows_nor_underflows():
    W = weight((10, 8))
    M = structmat.approximate(W, "lowrank", 0.5)
    reference = structmat.relative_error(W, M)
    for s in (1e-300, 1e-160, 1e160, 1e300, 4.0**511):
        assert structmat.relative_error(W * s, M.scaled(s)) == pytest.approx(reference, rel=1e-12)
    assert structmat.relative_error(np.zeros((3, 2)), structmat.approximate(np.zeros((3, 2)), "lowrank", 1.0)) == 0.0
