"""Sequential refitting: each chosen layer fitted again, in the order the model calls it, on the inputs it sees in
the model compressed so far, to reproduce the dense layer's outputs on the dense model's inputs.

The curves are fitted on the *dense* model's inputs ``X`` of every layer. Once the layers before it are compressed,
a layer sees other inputs ``X'``, and an error made upstream travels on. Compressing the layers one after the other
and fitting each on the inputs of the partly compressed model is what SparseGPT (Frantar & Alistarh, "SparseGPT:
massive language models can be accurately pruned in one-shot", ICML 2023, section 3.5 and Algorithm 1's caller) and
SVD-LLM (Wang et al., "SVD-LLM: truncation-aware singular value decomposition for large language model
compression", ICLR 2025, section 3.2, "sequential low-rank approximation") do. Here the target stays the dense
layer on the dense inputs — the *asymmetric* objective of GPTQv2 (Li et al., "GPTQv2: efficient finetuning-free
quantization with asymmetric calibration", 2025, eq. (4)) —

.. math::

    \\min_M \\|X W^T - X' M^T\\|_F^2 = \\|X' (W_\\star - M)^T\\|_F^2 + \\text{const},
    \\qquad W_\\star = W K^T (C' + \\lambda I)^{-1}, \\quad K = X'^T X / N, \\quad C' = X'^T X' / N,

so a layer can undo part of the error of the layers before it. ``W_⋆`` is the unconstrained least-squares layer on
the new inputs; every family's data-aware fit then minimises the remaining term, ``approximate(W_⋆, family, budget,
inputs=C')``, at the budget the allocation chose. The bias moves by the mean output difference
``W μ − M μ'`` (its least-squares value for that ``M``). A layer kept dense keeps its weight unless
``refit_dense=True``, which sets it to ``W_⋆`` at no cost in parameters.

Cost: one forward pass per group of layers over the calibration items, in both models, each stopped at the group
(a group is the layers that read the same input tensor, such as an attention block's query, key and value), plus
one fit per structured layer.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import nn
from tqdm.auto import tqdm

from structmat.compress.calibration import call_model
from structmat.compress.selection import is_pointwise_conv
from structmat.layers.pointwise_conv import pointwise_geometry, pointwise_pixels
from structmat.statistics import InputStatistics

__all__ = ["call_groups", "SequentialStatistics", "layer_target", "sequential_statistics"]

logger = logging.getLogger(__name__)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the watched layers have their inputs."""


def _input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rows the layer multiplies: ``(..., in_features)``, or a pointwise convolution's pixels."""
    if is_pointwise_conv(module):
        return pointwise_pixels(x, *pointwise_geometry(module))
    return x


def call_groups(model: nn.Module, layers, item) -> list[list[int]]:
    """Indices into ``layers`` in the order ``model(item)`` calls them, grouped: consecutive calls on the very same
    input tensor form one group. Layers never called come last, one group each."""
    order: list[tuple[int, torch.Tensor]] = []   # the inputs are held, so no tensor's identity is reused

    def recorder(index):
        def hook(module, inputs):
            if not any(i == index for i, _ in order):
                order.append((index, inputs[0]))
        return hook

    handles = [module.register_forward_pre_hook(recorder(i)) for i, (_, module) in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            call_model(model, item)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    groups: list[list[int]] = []
    previous = None
    for index, x in order:
        if groups and x is previous:
            groups[-1].append(index)
        else:
            groups.append([index])
        previous = x
    called = {i for i, _ in order}
    groups += [[i] for i in range(len(layers)) if i not in called]
    return groups


class SequentialStatistics:
    """The statistics of one layer input in the dense (``X``) and the partly compressed (``X'``) model: both second
    moments, the cross moment ``K = X'ᵀX / N`` and both means, over the same rows."""

    def __init__(self, n_features: int, dense: InputStatistics | None = None) -> None:
        self.known_dense = dense is not None
        self.dense = dense if dense is not None else InputStatistics(n_features)
        self.compressed = InputStatistics(n_features)
        self.cross = np.zeros((n_features, n_features))
        self.count = 0

    def update(self, x: torch.Tensor, x_compressed: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        xc = x_compressed.reshape(-1, x_compressed.shape[-1]).double()
        if not self.known_dense:
            self.dense.update(x)
        self.compressed.update(xc)
        self.cross += (xc.T @ x).numpy()
        self.count += x.shape[0]

    @property
    def cross_moment(self) -> np.ndarray:
        return self.cross / max(self.count, 1)


def layer_target(W: np.ndarray, stats: SequentialStatistics, ridge: float) -> np.ndarray:
    """``W_⋆ = W Kᵀ (C' + λI)⁻¹`` with ``λ = ridge · tr(C') / n`` (see the module docstring)."""
    C = stats.compressed.second_moment
    n = C.shape[0]
    lam = ridge * float(np.trace(C)) / n
    if lam <= 0.0:
        lam = 1e-12
    factor = scipy.linalg.cho_factor((C + C.T) / 2 + lam * np.eye(n), lower=True, check_finite=False)
    # W_⋆ᵀ = (C' + λI)⁻¹ K Wᵀ
    return scipy.linalg.cho_solve(factor, stats.cross_moment @ W.T, check_finite=False).T


def asymmetric_error(W: np.ndarray, M: np.ndarray, stats: SequentialStatistics) -> float:
    """``‖X Wᵀ − X' Mᵀ‖_F / ‖X Wᵀ‖_F`` from the moments."""
    Cd, Cc, K = stats.dense.second_moment, stats.compressed.second_moment, stats.cross_moment
    energy = float(np.einsum("ij,ij->", W @ Cd, W))
    value = energy - 2.0 * float(np.einsum("ij,ij->", M @ K, W)) + float(np.einsum("ij,ij->", M @ Cc, M))
    return float(np.sqrt(max(value, 0.0) / energy)) if energy > 0 else float("inf")


def sequential_statistics(dense: nn.Module, compressed: nn.Module, names: list[str], calibration, *,
                          row_mask=None, dense_statistics: InputStatistics | None = None
                          ) -> dict[str, SequentialStatistics]:
    """For layers ``names`` that read one input tensor: its :class:`SequentialStatistics` over ``calibration``.

    Both models run on every item and stop as soon as the first of ``names`` has its input.
    ``dense_statistics``: the dense inputs' statistics over the same items and rows, when already gathered.
    """
    first = names[0]
    dense_module = dense.get_submodule(first)
    compressed_module = compressed.get_submodule(first)
    n = dense_module.in_channels if is_pointwise_conv(dense_module) else dense_module.in_features
    stats = SequentialStatistics(n, dense_statistics)
    captured = {}

    def capture(key, module):
        def hook(_, inputs):
            captured[key] = _input_rows(module, inputs[0].detach())
            raise _Stop
        return hook

    handles = [dense_module.register_forward_pre_hook(capture("dense", dense_module)),
               compressed_module.register_forward_pre_hook(capture("compressed", compressed_module))]
    modes = dense.training, compressed.training
    dense.eval()
    compressed.eval()
    try:
        with torch.inference_mode():
            for item in calibration:
                for key, model in (("dense", dense), ("compressed", compressed)):
                    captured.pop(key, None)
                    try:
                        call_model(model, item)
                    except _Stop:
                        pass
                    if key not in captured:
                        raise ValueError(f"layer {first!r} was not called on a calibration item")
                x, xc = captured["dense"], captured["compressed"]
                mask = row_mask(item) if row_mask is not None else None
                if mask is not None and tuple(x.shape[:-1]) == tuple(mask.shape):
                    x, xc = x[mask], xc[mask]
                stats.update(x, xc)
    finally:
        for handle in handles:
            handle.remove()
        dense.train(modes[0])
        compressed.train(modes[1])
    if stats.count != stats.dense.count:
        raise ValueError(f"layer {first!r}: {stats.count} calibration rows now, {stats.dense.count} in its statistics")
    return {name: stats for name in names}


def fit_target(W_star: np.ndarray, stats: SequentialStatistics, family: str, budget: int, options: dict,
               time_limit):
    """The data-aware fit of ``W_⋆`` on ``C'`` in a child process (see :mod:`structmat.compress._runner`);
    the matrix, or None when the fit failed or timed out (a message is logged)."""
    import structmat
    from structmat.compress._runner import run_task
    from structmat.compress.curves import fit_point

    with tempfile.TemporaryDirectory(prefix="structmat-seq-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "weight.npy", W_star, allow_pickle=False)
        stats.compressed.save(tmp / "stats.npz")
        row = run_task(fit_point, {"weight_path": str(tmp / "weight.npy"), "stats_path": str(tmp / "stats.npz"),
                                   "family": family, "budget": int(budget), "options": dict(options),
                                   "matrix_path": str(tmp / "matrix.npz")}, time_limit=time_limit)
        if row["status"] != "ok":
            logger.info("sequential refit of %s at budget %d: %s (%s)", family, budget, row["status"],
                        row.get("message"))
            return None
        return structmat.load(tmp / "matrix.npz")


def bias_shift(W: np.ndarray, M: np.ndarray, stats: SequentialStatistics) -> np.ndarray:
    """``W μ − M μ'``: the bias change that makes the mean outputs agree."""
    return W @ stats.dense.mean - M @ stats.compressed.mean


def progress_bar(total: int, show: bool):
    return tqdm(total=total, desc="sequential refit", unit="layer", disable=not show, leave=False)
