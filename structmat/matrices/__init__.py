"""Structured matrices: the one currency every part of structmat trades in."""

from structmat.matrices.base import StructuredMatrix, TransposedMatrix
from structmat.matrices.dense import Dense
from structmat.matrices.hmatrix import HEDLRMatrix, HMatrix, HODLRMatrix
from structmat.matrices.io import StructmatFileError, load
from structmat.matrices.ldr import LDR
from structmat.matrices.lowrank import LowRank
from structmat.matrices.toeplitz_like import ToeplitzLike

__all__ = ["StructuredMatrix", "TransposedMatrix", "Dense", "LowRank", "ToeplitzLike", "LDR", "HMatrix", "HODLRMatrix", "HEDLRMatrix", "StructmatFileError", "load"]
