"""Calibration: run a model on sample inputs and gather each selected layer's input statistics with forward hooks.

Every calibration item is passed to the model the way a user would: a mapping as ``model(**item)`` (a tokenizer's
output), a tuple or list as ``model(*item)``, anything else as ``model(item)``. A hook on each selected layer adds
the rows it sees to that layer's :class:`~structmat.InputStatistics` (``C = XᵀX / N`` in float64, memory ``O(n²)``
whatever the number of rows): an ``nn.Linear`` sees rows of shape ``(..., in_features)``, a pointwise convolution
one row per output pixel, ``(batch·H'·W', in_channels)``.

Padding. A transformer's padded positions are not real inputs. ``row_mask(item)`` returns a boolean tensor over the
leading dimensions of the layers' inputs (for a tokenizer's batch, ``item["attention_mask"].bool()`` of shape
``(batch, sequence)``); rows where it is False are dropped for every layer whose input has exactly those leading
dimensions, and layers that see other shapes (a pooler on ``(batch, hidden)``) keep all their rows.
:func:`attention_mask_rows` is that function for mappings with an ``attention_mask``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from structmat.compress.selection import is_pointwise_conv
from structmat.layers.pointwise_conv import pointwise_geometry, pointwise_pixels
from structmat.statistics import InputStatistics

__all__ = ["call_model", "collect_statistics", "attention_mask_rows"]


def call_model(model: nn.Module, item):
    """``model(**item)`` for a mapping, ``model(*item)`` for a tuple or list, else ``model(item)``."""
    if isinstance(item, Mapping):
        return model(**item)
    if isinstance(item, (tuple, list)):
        return model(*item)
    return model(item)


def attention_mask_rows(item) -> torch.Tensor:
    """``item["attention_mask"]`` as a boolean row mask (for :func:`collect_statistics`'s ``row_mask``)."""
    if not isinstance(item, Mapping) or "attention_mask" not in item:
        raise ValueError("attention_mask_rows needs calibration items that are mappings with an 'attention_mask' "
                         f"entry; got {type(item).__name__}")
    return torch.as_tensor(item["attention_mask"]).bool()


class _Recorder:
    """The forward hook of one layer: adds its input rows to ``stats``."""

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module
        self.conv = is_pointwise_conv(module)
        self.geometry = pointwise_geometry(module) if self.conv else None
        n = module.in_channels if self.conv else module.in_features
        self.stats = InputStatistics(n)
        self.mask: torch.Tensor | None = None
        self.checked = False

    def _check_conv(self, x: torch.Tensor, output) -> None:
        """The module's output must be the plain 1×1 convolution of its input (a subclass may pad or more)."""
        stride, padding = self.geometry
        expected = F.conv2d(x, self.module.weight, self.module.bias, stride, padding)
        if not torch.is_tensor(output) or output.shape != expected.shape or not torch.allclose(
                output.float(), expected.float(), rtol=1e-4, atol=1e-5 * (1.0 + float(expected.abs().max()))):
            raise ValueError(f"layer {self.name!r} ({type(self.module).__name__}) does not compute a plain 1x1 "
                             f"convolution of its input (stride {stride}, padding {padding}); its forward does "
                             "something else (extra padding?), so it cannot be replaced: leave it out of where")
        self.checked = True

    def __call__(self, module, inputs, output) -> None:
        x = inputs[0].detach()
        if self.conv:
            if not self.checked:
                self._check_conv(x, output)
            rows = pointwise_pixels(x, *self.geometry)
        else:
            rows = x
        if self.mask is not None and tuple(rows.shape[:-1]) == tuple(self.mask.shape):
            rows = rows[self.mask]
        self.stats.update(rows.reshape(-1, rows.shape[-1]).float())


def collect_statistics(model: nn.Module, layers, calibration, *, row_mask=None, progress: bool = False,
                       description: str = "calibration") -> dict[str, InputStatistics]:
    """Run ``model`` on every calibration item and return each layer's :class:`~structmat.InputStatistics`.

    Parameters
    ----------
    model : nn.Module
        Run in evaluation mode without autograd (its mode is restored afterwards).
    layers : list of (name, module)
        The layers to watch (:func:`~structmat.compress.selection.select_layers`).
    calibration : iterable
        Model inputs (see the module docstring).
    row_mask : callable(item) -> bool tensor, optional
        Rows to keep (see the module docstring).
    progress : bool
        A tqdm bar over the items.

    Raises
    ------
    ValueError
        no calibration item, a selected layer that was never called, or a convolution whose forward is not a plain
        1×1 convolution.
    """
    recorders = [_Recorder(name, module) for name, module in layers]
    handles = [r.module.register_forward_hook(r) for r in recorders]
    was_training = model.training
    model.eval()
    count = 0
    try:
        with torch.inference_mode():
            total = len(calibration) if hasattr(calibration, "__len__") else None
            for item in tqdm(calibration, desc=description, total=total, disable=not progress, leave=False):
                mask = row_mask(item) if row_mask is not None else None
                for r in recorders:
                    r.mask = mask
                call_model(model, item)
                count += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if count == 0:
        raise ValueError("calibration held no items; pass an iterable of model inputs (a list of batches)")
    silent = [r.name for r in recorders if r.stats.count == 0]
    if silent:
        raise ValueError(f"layers {silent[:8]} saw no input rows during calibration (never called, or every row "
                         "masked out); leave them out of where")
    return {r.name: r.stats for r in recorders}
