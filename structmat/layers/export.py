"""Exports that keep the structure: ``torch.export`` (strict and non-strict), TorchScript tracing and ONNX.

Every structured layer computes, while traced, with plain torch operations on its own parameters and compact index
buffers (:mod:`structmat.layers.base`), so the exported graph stores about ``nparams`` numbers plus the indices and
the bias, never the dense ``out × in`` weight, and the batch dimension stays dynamic. Whole models with structured
layers (from :func:`~structmat.layers.replace_linear`) export the same way. Exports run in ``eval`` mode without
autograd; the module's own mode is restored afterwards.

ONNX goes through torch's dynamo exporter (opset 18 by default; the ``onnx`` and ``onnxscript`` packages, the
``export`` extra) and is checked with the ONNX checker. Products of sparse factors become Gather, Mul and
ScatterElements (add); Toeplitz-like layers become ``DFT`` nodes; the other families MatMul and reshapes.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["export_program", "save_program", "trace_module", "export_onnx", "onnx_initializer_count",
           "EXPORT_FORMATS"]

#: Formats of :func:`export_model_file` and ``structmat export``: ``.onnx`` and torch.export's ``.pt2`` archive.
EXPORT_FORMATS = ("onnx", "pt2")


@contextlib.contextmanager
def _quiet_exporter():
    """The ONNX exporter's and optimiser's INFO chatter down to warnings while exporting."""
    import logging

    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(max(log.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


@contextlib.contextmanager
def _inference(module: nn.Module):
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def _example_tuple(example) -> tuple:
    if isinstance(example, torch.Tensor):
        return (example,)
    if isinstance(example, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in example):
        return tuple(example)
    raise TypeError(f"example must be a tensor or a tuple of tensors; got {type(example).__name__}")


def _batch_shapes(example: tuple, dynamic_batch: bool):
    """``dynamic_shapes`` making dimension 0 of every input one shared dynamic batch size (None when static)."""
    if not dynamic_batch:
        return None
    for t in example:
        if t.dim() == 0 or t.shape[0] < 2:
            raise ValueError(f"the example batch must have at least 2 rows to export a dynamic batch size (torch "
                             f"specialises sizes 0 and 1); got an input of shape {tuple(t.shape)}")
    batch = torch.export.Dim("batch")
    return tuple({0: batch} for _ in example)


def export_program(module: nn.Module, example, *, strict: bool = True, dynamic_batch: bool = True):
    """``torch.export.export`` of ``module`` in inference mode, with a dynamic batch size by default.

    Parameters
    ----------
    module : nn.Module
        A structured layer, or any model containing them.
    example : tensor or tuple of tensors
        Example inputs; their first dimension is the batch (at least 2 rows for a dynamic batch).
    strict : bool
        torch.export's strict mode (TorchDynamo tracing) or non-strict (Python tracing).

    Returns
    -------
    torch.export.ExportedProgram
    """
    example = _example_tuple(example)
    with _inference(module):
        return torch.export.export(module, example, dynamic_shapes=_batch_shapes(example, dynamic_batch),
                                   strict=strict)


def save_program(program, path) -> Path:
    """Write an ExportedProgram as a ``.pt2`` archive atomically (read it back with ``torch.export.load``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.export.save(program, f)
    os.replace(tmp, path)
    return path


def trace_module(module: nn.Module, example):
    """``torch.jit.trace`` of ``module`` in inference mode; the trace runs any batch size (checked on a batch
    one row larger than the example's)."""
    example = _example_tuple(example)
    with _inference(module):
        traced = torch.jit.trace(module, example, check_trace=False)
        wider = tuple(torch.cat([t, t[:1]]) for t in example)
        expected, got = module(*wider), traced(*wider)
    if not torch.allclose(expected, got, rtol=1e-4, atol=1e-5 * float(expected.abs().max()) + 1e-12):
        raise RuntimeError("the traced module disagrees with the module on another batch size")
    return traced


#: The ONNX graph optimiser folds a computation on constants into a new initializer only up to this many elements
#: (shapes and scalars):
#: larger results (the row of every sparse value, int64 copies of int32 indices) would store more numbers than the
#: structure itself; ONNX Runtime folds them in memory when it loads the model.
FOLD_LIMIT = 16


def export_onnx(module: nn.Module, example, path, *, opset: int = 18, dynamic_batch: bool = True,
                optimize: bool = True) -> Path:
    """Export ``module`` to ONNX with torch's dynamo exporter, atomically; inputs ``input_0``…, outputs
    ``output_0``…; the batch dimension is dynamic by default. With ``optimize``, onnxscript's optimiser folds
    constants up to :data:`FOLD_LIMIT` elements. Needs the ``onnx`` and ``onnxscript`` packages."""
    if opset < 18:
        raise ValueError(f"opset must be >= 18 (the dynamo exporter's minimum); got {opset}")
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("ONNX export needs the onnx and onnxscript packages: pip install 'structmat[export]'") \
            from exc
    example = _example_tuple(example)
    path = Path(path)
    with _inference(module), _quiet_exporter(), contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(module, example, dynamo=True, opset_version=opset, optimize=False,
                                    dynamic_shapes=_batch_shapes(example, dynamic_batch),
                                    input_names=[f"input_{i}" for i in range(len(example))], verbose=False)
        if optimize:
            import onnxscript.optimizer

            onnxscript.optimizer.optimize_ir(program.model, input_size_limit=FOLD_LIMIT,
                                             output_size_limit=FOLD_LIMIT)
    tmp = path.with_name(path.name + ".tmp")
    program.save(str(tmp))
    onnx.checker.check_model(str(tmp))
    os.replace(tmp, path)
    return path


def onnx_initializer_count(path) -> int:
    """Numbers stored in an ONNX file: the elements of its initializers and of its Constant nodes' tensors."""
    import numpy as np
    import onnx

    model = onnx.load(str(path))
    total = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.TENSOR:
                    total += int(np.prod(attribute.t.dims))
    return total
