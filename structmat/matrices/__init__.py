"""Structured matrices: the one currency every part of structmat trades in."""

from structmat.matrices.base import StructuredMatrix, TransposedMatrix
from structmat.matrices.dense import Dense
from structmat.matrices.io import StructmatFileError, load
from structmat.matrices.lowrank import LowRank

__all__ = ["StructuredMatrix", "TransposedMatrix", "Dense", "LowRank", "StructmatFileError", "load"]
