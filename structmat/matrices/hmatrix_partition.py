"""Block partitions of a rectangular index set ``[0, m) × [0, n)`` for hierarchical matrices.

Clusters are index intervals bisected at their midpoint, ``[a, b) → [a, ⌊(a+b)/2⌋), [⌊(a+b)/2⌋, b)``, separately
for the rows (``0..m``) and the columns (``0..n``); a block pairs a row cluster with a column cluster of the same
level. Three partitions are built from these cluster trees:

HODLR, depth L
    Split only the diagonal blocks, L times. Leaves: ``2^L`` diagonal blocks plus ``2^ℓ`` off-diagonal blocks at
    each level ``ℓ = 1..L``, i.e. ``3·2^L − 2`` leaves (weak admissibility: Hackbusch, Khoromskij & Kriemann,
    "Hierarchical matrices based on a weak admissibility criterion", Computing 73, 2004).
HEDLR, depth L
    A uniform ``2^L × 2^L`` grid of blocks (block low rank, Amestoy et al., SIAM J. Sci. Comput. 37(3), 2015).
η-admissible H
    Split a block into its four children iff it is inadmissible and both sides exceed ``min_block``. A block is
    admissible iff ``min(diam X_τ, diam Y_σ) <= η · dist(X_τ, Y_σ)`` (Hackbusch, "Hierarchical Matrices:
    Algorithms and Analysis", 2015, §5.2, in its ``min`` form), measured in normalized coordinates
    ``X_τ = [a/m, b/m)``, ``Y_σ = [c/n, d/n)`` so that rectangular matrices make sense: ``diam`` is the length
    and ``dist`` the gap ``max(0, c/n − b/m, a/m − d/n)``. Adjacent clusters have distance 0 and are never
    admissible. The test is done in integers (everything multiplied by ``m·n``).

Every function returns an int64 array of shape ``(L, 5)`` with rows ``(r0, r1, c0, c1, admissible)``, sorted by
``(r0, c0)``. The ``admissible`` flag says whether the partition meant the block to be low rank; the rank
allocation is free to store any leaf densely or in low rank.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "hodlr_blocks", "hedlr_blocks", "eta_blocks", "max_depth", "check_eta", "PARTITION_KINDS", "blocks_for",
]

PARTITION_KINDS = ("hodlr", "hedlr", "eta")


def _mid(a: int, b: int) -> int:
    return (a + b) // 2


def max_depth(m: int, n: int, min_block: int = 1) -> int:
    """The largest depth L whose level-L clusters all hold at least ``min_block`` indices on both sides."""
    side, depth = min(m, n), 0
    while side >= (2 ** (depth + 1)) * min_block:
        depth += 1
    return depth


def _check_depth(m: int, n: int, depth) -> int:
    if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, numbers.Integral):
        raise TypeError(f"depth must be an int >= 0; got {type(depth).__name__} {depth!r}")
    limit = max_depth(m, n)
    if not 0 <= depth <= limit:
        raise ValueError(
            f"depth must be an int in [0, {limit}] for shape ({m}, {n}) (every cluster needs at least one index); "
            f"got {depth}"
        )
    return int(depth)


def check_eta(eta) -> float:
    """Check the admissibility parameter η (a positive finite real)."""
    if isinstance(eta, (bool, np.bool_)) or not isinstance(eta, numbers.Real):
        raise TypeError(f"eta must be a positive real number; got {type(eta).__name__} {eta!r}")
    eta = float(eta)
    if not (eta > 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a positive finite real number; got {eta}")
    return eta


def _sorted(rows: list[tuple[int, int, int, int, int]]) -> np.ndarray:
    out = np.array(rows, dtype=np.int64).reshape(-1, 5)
    return out[np.lexsort((out[:, 2], out[:, 0]))]


def hodlr_blocks(m: int, n: int, depth: int) -> np.ndarray:
    """HODLR leaves of depth ``depth``: ``(r0, r1, c0, c1, admissible)`` rows; depth 0 is the whole matrix.

    Examples
    --------
    >>> hodlr_blocks(8, 6, 1).tolist()
    [[0, 4, 0, 3, 0], [0, 4, 3, 6, 1], [4, 8, 0, 3, 1], [4, 8, 3, 6, 0]]
    """
    depth = _check_depth(m, n, depth)
    leaves = []

    def recurse(r0, r1, c0, c1, level):
        if level == depth:
            leaves.append((r0, r1, c0, c1, 0))
            return
        rm, cm = _mid(r0, r1), _mid(c0, c1)
        leaves.append((r0, rm, cm, c1, 1))
        leaves.append((rm, r1, c0, cm, 1))
        recurse(r0, rm, c0, cm, level + 1)
        recurse(rm, r1, cm, c1, level + 1)

    recurse(0, m, 0, n, 0)
    return _sorted(leaves)


def _intervals(size: int, depth: int) -> list[tuple[int, int]]:
    out = [(0, size)]
    for _ in range(depth):
        out = [half for a, b in out for half in ((a, _mid(a, b)), (_mid(a, b), b))]
    return out


def hedlr_blocks(m: int, n: int, depth: int) -> np.ndarray:
    """HEDLR leaves: the uniform ``2^depth × 2^depth`` grid of the level-``depth`` clusters, all admissible."""
    depth = _check_depth(m, n, depth)
    return _sorted([(a, b, c, d, 1) for a, b in _intervals(m, depth) for c, d in _intervals(n, depth)])


def _admissible(m: int, n: int, r0: int, r1: int, c0: int, c1: int, eta: float) -> bool:
    """``min(diam X, diam Y) <= η dist(X, Y)`` in normalized coordinates, scaled by ``m·n`` to stay in integers."""
    diam = min((r1 - r0) * n, (c1 - c0) * m)
    dist = max(0, c0 * m - r1 * n, r0 * n - c1 * m)
    return dist > 0 and diam <= eta * dist


def eta_blocks(m: int, n: int, eta: float = 1.0, min_block: int = 16) -> np.ndarray:
    """Leaves of the η-admissible block cluster tree (see the module docstring).

    Examples
    --------
    >>> B = eta_blocks(64, 64, eta=1.0, min_block=8)
    >>> int(B[:, 4].sum()), len(B)  # admissible leaves, all leaves
    (24, 46)
    """
    eta = check_eta(eta)
    if isinstance(min_block, (bool, np.bool_)) or not isinstance(min_block, numbers.Integral) or min_block < 1:
        raise ValueError(f"min_block must be an int >= 1; got {min_block!r}")
    leaves = []
    stack = [(0, m, 0, n)]
    while stack:
        r0, r1, c0, c1 = stack.pop()
        if _admissible(m, n, r0, r1, c0, c1, eta):
            leaves.append((r0, r1, c0, c1, 1))
        elif r1 - r0 > min_block and c1 - c0 > min_block:
            rm, cm = _mid(r0, r1), _mid(c0, c1)
            stack.extend([(r0, rm, c0, cm), (r0, rm, cm, c1), (rm, r1, c0, cm), (rm, r1, cm, c1)])
        else:
            leaves.append((r0, r1, c0, c1, 0))
    return _sorted(leaves)


def blocks_for(m: int, n: int, partition: dict) -> np.ndarray:
    """The leaves described by a partition record: ``{"kind": "hodlr"|"hedlr", "depth": L}`` or
    ``{"kind": "eta", "eta": η, "min_block": b}``."""
    kind = partition.get("kind")
    if kind == "hodlr":
        return hodlr_blocks(m, n, partition["depth"])
    if kind == "hedlr":
        return hedlr_blocks(m, n, partition["depth"])
    if kind == "eta":
        return eta_blocks(m, n, partition["eta"], partition["min_block"])
    raise ValueError(f"partition kind must be one of {PARTITION_KINDS}; got {kind!r}")
