"""Leaf spectra for the hierarchical fits: singular triplets of each leaf, computed once and cached by block.

Small leaves get an exact SVD (one batched LAPACK call per leaf shape); larger ones a randomized SVD (Halko,
Martinsson & Tropp, SIAM Review 53(2), 2011, Algorithms 4.4 and 5.1) of their leading part only, extended when the
rank allocation wants more. The randomized factors are an exact SVD of ``QQᵀW_b``, so ``‖W_b‖² − Σ_{i≤r} s_i²`` is
the exact error of the truncation that is built.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass

import numpy as np

from structmat.approximators.hmatrix_allocation import LeafSpectrum
from structmat.approximators.lowrank import truncated_svd

__all__ = ["LeafSpectra", "LeafSVD"]

#: Leaves with a side up to this use the exact SVD; larger ones the randomized SVD of their leading part.
EXACT_MAX_SIDE = 96
#: First guess of a leaf's useful rank: this multiple of the rank it would get at the budget's share of its area.
INITIAL_RANK_FACTOR = 1.25
INITIAL_RANK_EXTRA = 8

#: Leaves up to this side run with one BLAS thread: threads only add overhead on many small factorizations (on
#: a busy 2-core machine, 25× slower wall time for a 300×280 fit).
SINGLE_THREAD_MAX_SIDE = 512


@functools.lru_cache(maxsize=1)
def _threadpools():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _one_thread():
    return _threadpools().limit(limits=1)


@dataclass
class LeafSVD:
    """Cached leading singular triplets of one leaf (``U`` (m_b, k), ``s`` (k,), ``Vt`` (k, n_b)) and ``‖W_b‖²``."""

    norm2: float
    U: np.ndarray
    s: np.ndarray
    Vt: np.ndarray
    complete: bool
    exact: bool
    spectrum: LeafSpectrum | None = None  # built once, on first use


class LeafSpectra:
    """Leaf SVDs of one (reordered) matrix, computed on demand, cached by box and extended when needed."""

    def __init__(self, W: np.ndarray, budget: int, *, power_iterations: int, oversamples: int, seed_base: int):
        self.W = W
        self.budget = budget
        self.share = budget / W.size
        self.power_iterations = power_iterations
        self.oversamples = oversamples
        self.seed_base = seed_base
        self.cache: dict[tuple[int, int, int, int], LeafSVD] = {}
        self.svd_seconds = 0.0

    def _cap(self, mb: int, nb: int) -> int:
        """Ranks beyond this are never used: dense is cheaper, or the budget cannot pay for them."""
        return min((mb * nb - 1) // (mb + nb), self.budget // (mb + nb), mb, nb)

    def _compute(self, box, k: int, exact: bool = False) -> LeafSVD:
        r0, r1, c0, c1 = box
        A = self.W[r0:r1, c0:c1]
        mb, nb = A.shape
        cap = self._cap(mb, nb)
        k = max(1, min(k, cap))
        side = min(mb, nb)
        start = time.perf_counter()
        norm2 = float(np.einsum("ij,ij->", A, A))
        with _one_thread() if side <= SINGLE_THREAD_MAX_SIDE else contextlib.nullcontext():
            U, s, Vt, k, exact = self._factor(A, k, cap, exact, (r0, r1, c0, c1))
        self.svd_seconds += time.perf_counter() - start
        return LeafSVD(norm2, U, s, Vt, complete=k >= cap, exact=exact or k >= side)

    def _factor(self, A, k, cap, exact, box):
        mb, nb = A.shape
        if cap <= 0:
            U, s, Vt = np.zeros((mb, 0)), np.zeros(0), np.zeros((0, nb))
            k, exact = 0, True
        elif exact or self._wants_exact(mb, nb, k):
            U, s, Vt = truncated_svd(A, cap, method="svd")
            k, exact = cap, True
        else:
            U, s, Vt = truncated_svd(A, k, method="randomized", oversamples=self.oversamples,
                                     power_iterations=self.power_iterations, seed=[self.seed_base, *box, k])
        return U, s, Vt, k, exact

    def _initial_rank(self, mb: int, nb: int) -> int:
        return math.ceil(INITIAL_RANK_FACTOR * self.share * mb * nb / (mb + nb)) + INITIAL_RANK_EXTRA

    def _wants_exact(self, mb: int, nb: int, k: int) -> bool:
        side = min(mb, nb)
        return side <= EXACT_MAX_SIDE or min(k, self._cap(mb, nb)) + self.oversamples >= side / 2

    def prefetch(self, boxes: np.ndarray) -> None:
        """Compute the exact SVDs of all new small leaves, one batched LAPACK call per leaf shape."""
        groups: dict[tuple[int, int], list] = {}
        for box in boxes.tolist():
            r0, r1, c0, c1 = box
            mb, nb = r1 - r0, c1 - c0
            if tuple(box) not in self.cache and self._wants_exact(mb, nb, self._initial_rank(mb, nb)):
                groups.setdefault((mb, nb), []).append(tuple(box))
        for (mb, nb), group in groups.items():
            if len(group) < 2 or self._cap(mb, nb) <= 0:
                continue
            start = time.perf_counter()
            stack = np.stack([self.W[r0:r1, c0:c1] for r0, r1, c0, c1 in group])
            with _one_thread():
                U, s, Vt = np.linalg.svd(stack, full_matrices=False)
            norm2 = np.einsum("gij,gij->g", stack, stack)
            cap = self._cap(mb, nb)
            for i, box in enumerate(group):
                self.cache[box] = LeafSVD(float(norm2[i]), U[i, :, :cap].copy(), s[i, :cap].copy(),
                                           Vt[i, :cap].copy(), complete=True, exact=True)
            self.svd_seconds += time.perf_counter() - start

    def leaf(self, box) -> LeafSVD:
        box = tuple(int(v) for v in box)
        if box not in self.cache:
            r0, r1, c0, c1 = box
            self.cache[box] = self._compute(box, self._initial_rank(r1 - r0, c1 - c0))
        return self.cache[box]

    def extend(self, box) -> None:
        box = tuple(int(v) for v in box)
        old = self.cache[box]
        if not old.complete:
            self.cache[box] = self._compute(box, 2 * len(old.s) + INITIAL_RANK_EXTRA)

    def make_exact(self, box) -> None:
        box = tuple(int(v) for v in box)
        if not self.leaf(box).exact:
            self.cache[box] = self._compute(box, 0, exact=True)

    def spectrum(self, box) -> LeafSpectrum:
        svd = self.leaf(box)
        if svd.spectrum is None:
            svd.spectrum = LeafSpectrum(int(box[1] - box[0]), int(box[3] - box[2]), svd.norm2, svd.s ** 2,
                                        svd.complete)
        return svd.spectrum
