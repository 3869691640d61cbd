"""structmat: replace the dense weight matrices of trained networks by structured matrices.

>>> import numpy as np, structmat
>>> W = np.random.default_rng(0).standard_normal((8, 6))
>>> M = structmat.approximate(W, "lowrank", budget=0.6)
>>> M.nparams <= 0.6 * W.size
True

``import structmat`` does not import torch; ``structmat.layers`` does.
"""

from structmat.approximators import approximate, fit_dense, fit_lowrank
from structmat.families import FAMILIES, Family, get_family
from structmat.matrices import Dense, LowRank, StructmatFileError, StructuredMatrix, load
from structmat.metrics import output_error, relative_error
from structmat.statistics import InputStatistics

__version__ = "0.1.0"

__all__ = [
    "approximate", "load", "relative_error", "output_error", "InputStatistics", "FAMILIES", "Family", "get_family",
    "StructuredMatrix", "Dense", "LowRank", "StructmatFileError", "fit_dense", "fit_lowrank",
]
