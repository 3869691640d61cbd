"""The sampled-bracket top-k selection equals a stable full sort, on large arrays too (where the bracket runs)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from structmat.approximators._selection import MIN_BRACKET_SIZE, top_k_mask


def reference(a, k):
    keep = np.zeros(a.size, dtype=bool)
    keep[np.argsort(-a.ravel(), kind="stable")[:k]] = True
    return keep.reshape(a.shape)


@pytest.mark.parametrize("kind", ["gaussian", "ties", "zeros", "skewed", "sorted"])
@pytest.mark.parametrize("share", [1e-4, 0.1, 0.5, 0.97])
def test_large_arrays_match_a_stable_sort(kind, share):
    rng = np.random.default_rng(0)
    size = 3 * MIN_BRACKET_SIZE + 16
    a = {"gaussian": np.abs(rng.standard_normal(size)),
         "ties": rng.integers(0, 5, size).astype(float),           # the k-th value is tied many times
         "zeros": np.where(rng.random(size) < 0.8, 0.0, rng.random(size)),
         "skewed": rng.lognormal(0.0, 6.0, size),
         "sorted": np.arange(size, dtype=float)}[kind]              # the strided sample sees a pattern
    k = max(1, int(share * size))
    mask = top_k_mask(a.reshape(16, -1), k)
    assert mask.shape == (16, size // 16) and mask.sum() == k
    np.testing.assert_array_equal(mask.ravel(), reference(a, k))


def test_the_bracket_partitions_only_a_few_entries(monkeypatch):
    import structmat.approximators._selection as selection

    sizes = []
    partition = np.partition
    monkeypatch.setattr(selection.np, "partition", lambda a, kth: sizes.append(a.size) or partition(a, kth))
    a = np.abs(np.random.default_rng(1).standard_normal(4 * MIN_BRACKET_SIZE))
    top_k_mask(a, a.size // 4)
    assert sizes and max(sizes) < a.size // 10


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60), st.integers(0, 70))
def test_small_arrays_match_a_stable_sort(values, k):
    a = np.array(values)
    np.testing.assert_array_equal(top_k_mask(a, k), reference(a, min(k, a.size)))
