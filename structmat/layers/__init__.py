"""PyTorch layers for structured matrices (imports torch), and whole-model replacement of ``nn.Linear``."""

from structmat.layers.base import StructuredLinear, layer_from_matrix
from structmat.layers.dense import DenseLinear
from structmat.layers.lowrank import LowRankLinear
from structmat.layers.replace import LayerReport, format_report, replace_linear, replacement_report

__all__ = [
    "StructuredLinear", "layer_from_matrix", "layer_class", "DenseLinear", "LowRankLinear",
    "replace_linear", "replacement_report", "format_report", "LayerReport",
]


def layer_class(family: str) -> type:
    """The StructuredLinear subclass of a registered family."""
    from structmat.families import get_family

    return get_family(family).layer_class()
