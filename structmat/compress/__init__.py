"""Whole-model compression: calibrate, allocate one budget across layers and families, distil, save.

>>> from structmat.compress import compress_model, distill_model, save_compressed, load_compressed  # doctest: +SKIP
>>> small, report = compress_model(model, 0.5, batches, where="encoder.*")                          # doctest: +SKIP
>>> print(report.to_text())                                                                          # doctest: +SKIP

Imports torch (``import structmat`` alone does not). The user guide is ``docs/compress.md``.
"""

from structmat.compress.calibration import attention_mask_rows, call_model, collect_statistics
from structmat.compress.config import CompressionConfig, default_cache_dir
from structmat.compress.distill import DistillationResult, distill_model
from structmat.compress.pipeline import compress_model
from structmat.compress.report import CompressionReport, LayerRow, plot_allocation
from structmat.compress.saving import load_compressed, save_compressed
from structmat.compress.selection import select_layers, structured_layers

__all__ = [
    "compress_model", "distill_model", "DistillationResult", "save_compressed", "load_compressed", "CompressionConfig", "CompressionReport", "LayerRow", "plot_allocation", "select_layers",
    "structured_layers", "collect_statistics", "call_model", "attention_mask_rows", "default_cache_dir",
]
