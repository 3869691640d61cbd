"""Measured CPU latency of a layer's weight product, one thread, median of repeats.

A layer is timed on ``batch`` input rows of its ``in_features`` (for a pointwise convolution: ``batch`` pixels),
forward only, without autograd, in float32, after a warm-up. Absolute times depend on the machine and its load;
what the report and the allocation use is the ratio to the dense layer of the same shape measured in the same run.
"""

from __future__ import annotations

import torch
from torch import nn

from structmat.benchmarks.timing import single_thread, time_repeats

__all__ = ["layer_latency_ms", "dense_latency_ms", "LATENCY_BATCHES"]

#: The batch sizes (rows) at which the report and the allocation measure latency.
LATENCY_BATCHES = (1, 32)


def layer_latency_ms(layer: nn.Module, in_features: int, batch: int, *, repeats: int = 9, seed: int = 0) -> float:
    """Median milliseconds of ``layer(x)`` for ``x`` of shape ``(batch, in_features)``, one thread."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_features, generator=generator)
    with single_thread(), torch.inference_mode():
        return 1e3 * time_repeats(lambda: layer(x), repeats=repeats, warmup=2, min_seconds=0.01).median


def dense_latency_ms(out_features: int, in_features: int, batch: int, *, repeats: int = 9) -> float:
    """The same measurement for an ``nn.Linear`` of that shape."""
    return layer_latency_ms(nn.Linear(in_features, out_features), in_features, batch, repeats=repeats)
