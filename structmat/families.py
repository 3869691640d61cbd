"""The family registry: one line per family, mapping its public name to its matrix, fit and layer.

Family names are the strings users pass to ``approximate`` and are written into saved files: never rename one.
The layer is an import string so that ``import structmat`` does not import torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from structmat.approximators.dense import fit_dense
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.hmatrix import fit_hedlr, fit_hmatrix, fit_hodlr
from structmat.approximators.lowrank import fit_lowrank
from structmat.approximators.monarch import fit_monarch
from structmat.approximators.sparse_product import fit_sparse, fit_sparse_product
from structmat.approximators.ldr import fit_ldr
from structmat.approximators.toeplitz_like import fit_toeplitz_like
from structmat.approximators.sss import fit_sss
from structmat.matrices.dense import Dense
from structmat.matrices.hmatrix import HEDLRMatrix, HMatrix, HODLRMatrix
from structmat.matrices.lowrank import LowRank
from structmat.matrices.monarch import Monarch
from structmat.matrices.sparse_product import Sparse, SparseProduct
from structmat.matrices.ldr import LDR
from structmat.matrices.toeplitz_like import ToeplitzLike
from structmat.matrices.sss import SSS

__all__ = ["Family", "FAMILIES", "get_family", "structured_family_names"]


@dataclass(frozen=True)
class Family:
    """A registered family: ``name``, its ``matrix_class``, its ``fit(W, budget, **options)``, the import string
    of its torch ``layer`` (``"module:Class"``) and the ``nparams`` formula shown by ``structmat families``.

    ``fit`` is stored wrapped by :func:`structmat.approximators.fit_guard.guarded_fit`."""

    name: str
    matrix_class: type
    fit: Callable
    layer: str
    nparams_formula: str

    def __post_init__(self):
        # Every fit goes through the shared guard (input checks, thread limit, scale invariance, finite result),
        # also a family whose fit_<family> was defined without it.
        object.__setattr__(self, "fit", guarded_fit(self.fit))

    def layer_class(self):
        """Import and return the torch layer class (imports torch)."""
        module, _, attr = self.layer.partition(":")
        return getattr(importlib.import_module(module), attr)


FAMILIES: dict[str, Family] = {
    "dense": Family("dense", Dense, fit_dense, "structmat.layers.dense:DenseLinear", "m·n"),
    "lowrank": Family("lowrank", LowRank, fit_lowrank, "structmat.layers.lowrank:LowRankLinear", "r·(m+n)"),
    "sparse": Family("sparse", Sparse, fit_sparse, "structmat.layers.sparse_product:SparseLinear", "nnz"),
    "sparse_product": Family("sparse_product", SparseProduct, fit_sparse_product, "structmat.layers.sparse_product:SparseProductLinear", "Σ_j nnz(S_j)"),
    "monarch": Family("monarch", Monarch, fit_monarch, "structmat.layers.monarch:MonarchLinear", "t·J·K·(⌈n/K⌉+⌈m/J⌉)"),
    "toeplitz_like": Family("toeplitz_like", ToeplitzLike, fit_toeplitz_like, "structmat.layers.toeplitz_like:ToeplitzLikeLinear", "2·r·max(m,n)"),
    "ldr": Family("ldr", LDR, fit_ldr, "structmat.layers.ldr:LDRLinear", "2·r·max(m,n) + 6·max(m,n)"),
    "hodlr": Family("hodlr", HODLRMatrix, fit_hodlr, "structmat.layers.hmatrix:HODLRLinear", "Σ_low r_b(m_b+n_b) + Σ_dense m_b·n_b"),
    "hedlr": Family("hedlr", HEDLRMatrix, fit_hedlr, "structmat.layers.hmatrix:HEDLRLinear", "Σ_low r_b(m_b+n_b) + Σ_dense m_b·n_b"),
    "hmatrix": Family("hmatrix", HMatrix, fit_hmatrix, "structmat.layers.hmatrix:HMatrixLinear", "Σ_low r_b(m_b+n_b) + Σ_dense m_b·n_b"),
    "sss": Family("sss", SSS, fit_sss, "structmat.layers.sss:SSSLinear", "Σ m_k·n_k + Σ d_{k+1}(d_k+n_k) + m_k·d_k + (same for e)"),
}


def get_family(name: str) -> Family:
    """Look a family up by name; a ValueError lists the known names."""
    if not isinstance(name, str):
        raise TypeError(f"family must be a str naming a family; got {type(name).__name__} {name!r}")
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; known families: {sorted(FAMILIES)}") from None


def structured_family_names() -> list[str]:
    """Every registered family except the dense reference, in registry order."""
    return [name for name in FAMILIES if name != "dense"]
