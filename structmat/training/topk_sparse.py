r"""SWAT: training with top-K sparse weights and activations (Raihan & Aamodt, NeurIPS 2020).

``TopKSparseLinear`` and ``TopKSparseConv2d`` are drop-ins for ``nn.Linear`` / ``nn.Conv2d`` (they subclass them and
keep the **dense** weight as the parameter the optimiser updates). Per training step, with densities
:math:`d_w = 1 - s_w` and :math:`d_a = 1 - s_a`:

.. math::

    \tilde W = \mathrm{TopK}(W, d_w), \quad y = x \tilde W^\top + b, \quad \tilde x = \mathrm{TopK}(x, d_a),

    \frac{\partial L}{\partial x} = \frac{\partial L}{\partial y} \tilde W, \qquad
    \frac{\partial L}{\partial W} = \Bigl(\frac{\partial L}{\partial y}\Bigr)^{\!\top} \tilde x .

The forward pass uses the sparse weight with **dense** activations (sparsifying forward activations hurts
convergence, paper Sec. 3); the backward pass uses the sparse weight for the input gradient and the top-K
activations saved in place of ``x`` for the weight gradient. The weight gradient is dense, so weights pruned now can
grow back later (dynamic sparsity). All three products shrink: the forward and input-gradient products by
:math:`d_w`, the weight-gradient product by :math:`d_a` (paper Sec. 4, "training FLOP reduction").

Top-K keeps the entries whose magnitude reaches a threshold :math:`\tau`, the K-th largest magnitude with
:math:`K = \lceil d \cdot \text{numel} \rceil` (ties are kept). The thresholds are recomputed every ``topk_period``
training steps and reused in between, so the density drifts slightly between refreshes (the paper's periodic
top-K, Sec. 5.3). Weights use one threshold per layer; activations one threshold over the whole mini-batch tensor.

``structure="channel"`` prunes whole input channels of the weight instead of single entries: for a convolution
the :math:`k_h \times k_w` kernel slice ``W[o, i]`` of each (output, input) channel pair, scored by its L1 norm
(SWAT's ``structured_channel``); for a linear layer, which has no kernel, the column ``W[:, i]`` of each input
feature. Activations stay unstructured in both modes, as in the paper.

Evaluation mode uses the exact top-K weight of the current dense weight (the trained network *is* the sparse one)
with dense activations, and changes no state. ``to_matrix()`` exports that sparse weight as a ``"sparse"``
:class:`~structmat.matrices.base.StructuredMatrix`.

References
----------
.. [1] M. A. Raihan, T. M. Aamodt, "Sparse Weight Activation Training", NeurIPS 2020 (arXiv:2001.01969),
       Alg. 1 and Sec. 4-5.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from structmat._validation import check_positive_int
from structmat.training._conv import (check_conv_input, conv_input_grad, conv_weight_grad, output_hw,
                                      pad_input)
from structmat.training._copy import copied_layer
from structmat.training.allocation import check_sparsity
from structmat.training.cost import TrainingCost, conv2d_macs, linear_macs

__all__ = ["TopKSparseLinear", "TopKSparseConv2d", "STRUCTURES", "kth_largest", "keep_count"]

#: Weight pruning granularities.
STRUCTURES = ("unstructured", "channel")


def keep_count(density: float, n: int) -> int:
    """``K = ceil(density * n)`` entries kept out of ``n`` (at least one; ``1 - 0.7`` keeps 3 of 10, not 4)."""
    return max(1, math.ceil(density * n - 1e-9))


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th largest entry of ``values`` (a 0-d tensor), in linear time."""
    flat = values.reshape(-1)
    return torch.kthvalue(flat, flat.numel() - k + 1).values


class _TopKMixin:
    """Sparsities, thresholds, the step counter and step statistics shared by the two layers."""

    def _init_topk(self, sparsity, activation_sparsity, topk_period, structure) -> None:
        self.sparsity = check_sparsity(sparsity)
        self.activation_sparsity = (self.sparsity if activation_sparsity is None
                                    else check_sparsity(activation_sparsity, "activation_sparsity"))
        self.topk_period = check_positive_int(topk_period, "topk_period")
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}; got {structure!r}")
        self.structure = structure
        factory = dict(device=self.weight.device, dtype=self.weight.dtype)
        self.register_buffer("weight_threshold", torch.zeros((), **factory))
        self.register_buffer("activation_threshold", torch.zeros((), **factory))
        self.register_buffer("topk_step", torch.zeros((), dtype=torch.long, device=self.weight.device))
        #: Multiply-adds of the last training step; None before the first.
        self.last_cost: TrainingCost | None = None
        #: Share of non-zero entries in the sparse weight / the saved activation of the last training step: what
        #: a sparse kernel multiplies (zeros already in the input, e.g. after a ReLU, count as removed; at
        #: sparsity 0 the product is dense and the density 1). ``last_cost`` is computed from these.
        self.last_weight_density: float | None = None
        self.last_activation_density: float | None = None

    # ---------------------------------------------------------------- weights
    def _unit_scores(self) -> torch.Tensor:
        """Magnitudes of the pruning units: entries, kernel slices (conv) or columns (linear)."""
        magnitude = self.weight.detach().abs()
        if self.structure == "unstructured":
            return magnitude
        if magnitude.dim() == 4:
            return magnitude.sum((2, 3))
        return magnitude.sum(0)

    def _expand(self, unit_mask: torch.Tensor) -> torch.Tensor:
        if self.structure == "unstructured":
            return unit_mask
        if self.weight.dim() == 4:
            return unit_mask[:, :, None, None]
        return unit_mask[None, :]

    def _exact_threshold(self, scores: torch.Tensor) -> torch.Tensor:
        return kth_largest(scores, keep_count(1.0 - self.sparsity, scores.numel()))

    def _weight_mask(self, refresh: bool) -> torch.Tensor | None:
        """The top-K mask of the weight, None at sparsity 0. In training the cached threshold, recomputed when
        ``refresh``; in evaluation the exact top-K, changing no state."""
        if self.sparsity == 0.0:
            return None
        with torch.no_grad():
            scores = self._unit_scores()
            if not self.training:
                threshold = self._exact_threshold(scores)
            else:
                if refresh:
                    self.weight_threshold.fill_(self._exact_threshold(scores))
                threshold = self.weight_threshold
            return self._expand(scores >= threshold)

    def weight_mask(self) -> torch.Tensor:
        """The exact top-K mask of the current weight (boolean, the weight's shape)."""
        if self.sparsity == 0.0:
            return torch.ones_like(self.weight, dtype=torch.bool)
        with torch.no_grad():
            scores = self._unit_scores()
            return self._expand(scores >= self._exact_threshold(scores)).expand_as(self.weight)

    def sparse_weight(self) -> torch.Tensor:
        """The exact top-K weight (a detached copy): what the trained layer computes with."""
        return (self.weight.detach() * self.weight_mask()).clone()

    def to_matrix(self):
        """The exact top-K weight as a float64 :class:`~structmat.matrices.sparse_product.Sparse` matrix, the
        ``"sparse"`` family (a single CSR factor of the sparse-product family), e.g. for
        :func:`structmat.layers.layer_from_matrix`, ``save`` or the C benchmark.

        A convolution's weight is exported as its ``(C_out, C_in/groups · k_h · k_w)`` matrix, the product with
        unfolded (im2col) input patches.
        """
        from structmat.matrices.sparse_product import Sparse

        weight = self.sparse_weight().double().cpu().numpy()
        return Sparse(weight.reshape(weight.shape[0], -1))

    @property
    def nparams(self) -> int:
        """Weights kept by the exact top-K (the bias is separate)."""
        return int(self.weight_mask().sum())

    @property
    def dense_nparams(self) -> int:
        return self.weight.numel()

    # ---------------------------------------------------------------- activations
    def _saved_activation(self, x: torch.Tensor, refresh: bool) -> torch.Tensor:
        """The top-K activation saved for the weight gradient (detached)."""
        with torch.no_grad():
            if self.activation_sparsity == 0.0:
                return x.detach()
            magnitude = x.detach().abs()
            if refresh:
                keep = keep_count(1.0 - self.activation_sparsity, magnitude.numel())
                self.activation_threshold.fill_(kth_largest(magnitude, keep))
            return x.detach() * (magnitude >= self.activation_threshold)

    def _step(self) -> bool:
        """Whether this training step refreshes the thresholds; advances the step counter."""
        refresh = int(self.topk_step) % self.topk_period == 0
        self.topk_step += 1
        return refresh

    def _record(self, mask, weight, x_saved, dense) -> None:
        d_w = 1.0 if mask is None else float(torch.count_nonzero(mask.expand_as(weight))) / weight.numel()
        d_a = 1.0 if self.activation_sparsity == 0.0 else float(torch.count_nonzero(x_saved)) / x_saved.numel()
        self.last_weight_density, self.last_activation_density = d_w, d_a
        self.last_cost = TrainingCost(d_w * dense, d_w * dense, d_a * dense, dense)

    def _topk_repr(self) -> str:
        return (f"sparsity={self.sparsity}, activation_sparsity={self.activation_sparsity}, "
                f"topk_period={self.topk_period}, structure={self.structure}")


# ------------------------------------------------------------------------------------------------ linear
class _TopKSparseLinearFn(torch.autograd.Function):
    """``y = x W̃ᵀ + b``; ``dx = dy W̃``, ``dW = dyᵀ x̃`` (dense, for the dense master weight)."""

    @staticmethod
    def forward(ctx, x, x_saved, weight, bias, mask):
        w = weight if mask is None else weight * mask
        ctx.save_for_backward(x_saved, w)
        return F.linear(x, w, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x_saved, w = ctx.saved_tensors
        grad_x = grad_output @ w if ctx.needs_input_grad[0] else None
        grad_weight = grad_output.T @ x_saved if ctx.needs_input_grad[2] else None
        grad_bias = grad_output.sum(0) if ctx.needs_input_grad[3] else None
        return grad_x, None, grad_weight, grad_bias, None


class TopKSparseLinear(_TopKMixin, nn.Linear):
    """``nn.Linear`` trained with top-K sparse weights and activations (SWAT, Raihan & Aamodt 2020).

    Parameters
    ----------
    in_features, out_features, bias, device, dtype
        As ``nn.Linear``.
    sparsity : float in [0, 1)
        Share of the weights removed by top-K (0 is the exact layer).
    activation_sparsity : float in [0, 1), optional
        Share of the saved input activations removed by top-K; None means ``sparsity`` (as the paper does).
    topk_period : int >= 1
        Training steps between recomputations of the thresholds.
    structure : {"unstructured", "channel"}
        Prune single weights, or whole columns (input features) by L1 norm.

    Examples
    --------
    >>> import torch
    >>> layer = TopKSparseLinear(8, 4, sparsity=0.75)
    >>> y = layer(torch.randn(16, 8)); layer.last_weight_density, layer.nparams
    (0.25, 8)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, sparsity: float = 0.5,
                 activation_sparsity: float | None = None, topk_period: int = 1, structure: str = "unstructured",
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_topk(sparsity, activation_sparsity, topk_period, structure)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options) -> "TopKSparseLinear":
        """A SWAT layer whose dense master weight and bias are copies of ``linear``'s."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear; got {type(linear).__name__}")
        return copied_layer(cls, linear, **options)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.shape[-1:] != (self.in_features,):
            raise ValueError(f"TopKSparseLinear expects input of shape (..., {self.in_features}); "
                             f"got {tuple(input.shape)}")
        if not self.training:
            mask = self._weight_mask(refresh=False)
            return F.linear(input, self.weight if mask is None else self.weight * mask, self.bias)
        x = input.reshape(-1, self.in_features)
        refresh = self._step()
        mask = self._weight_mask(refresh)
        x_saved = self._saved_activation(x, refresh)
        y = _TopKSparseLinearFn.apply(x, x_saved, self.weight, self.bias, mask)
        self._record(mask, self.weight, x_saved, linear_macs(x.shape[0], self.in_features, self.out_features))
        return y.reshape(*input.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._topk_repr()}"


# ------------------------------------------------------------------------------------------------ conv2d
class _TopKSparseConv2dFn(torch.autograd.Function):
    """Convolution with ``W̃``; ``dx`` from ``W̃``, ``dW`` from the top-K activations."""

    @staticmethod
    def forward(ctx, x, x_saved, weight, bias, mask, geometry):
        w = weight if mask is None else weight * mask
        ctx.save_for_backward(x_saved, w)
        ctx.geometry, ctx.input_shape = geometry, x.shape
        return F.conv2d(x, w, bias, *geometry)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x_saved, w = ctx.saved_tensors
        grad_x = (conv_input_grad(ctx.input_shape, w, grad_output, *ctx.geometry)
                  if ctx.needs_input_grad[0] else None)
        grad_weight = (conv_weight_grad(x_saved, w.shape, grad_output, *ctx.geometry)
                       if ctx.needs_input_grad[2] else None)
        grad_bias = grad_output.sum((0, 2, 3)) if ctx.needs_input_grad[3] else None
        return grad_x, None, grad_weight, grad_bias, None, None


class TopKSparseConv2d(_TopKMixin, nn.Conv2d):
    """``nn.Conv2d`` trained with top-K sparse weights and activations (SWAT, Raihan & Aamodt 2020).

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype
        As ``nn.Conv2d``.
    sparsity, activation_sparsity, topk_period
        As :class:`TopKSparseLinear`.
    structure : {"unstructured", "channel"}
        Prune single weights, or the kernel slices ``W[o, i]`` of (output, input) channel pairs by L1 norm.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, sparsity: float = 0.5,
                 activation_sparsity: float | None = None, topk_period: int = 1, structure: str = "unstructured",
                 device=None, dtype=None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        self._init_topk(sparsity, activation_sparsity, topk_period, structure)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, **options) -> "TopKSparseConv2d":
        """A SWAT layer with ``conv``'s geometry, and copies of its weight and bias."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d; got {type(conv).__name__}")
        return copied_layer(cls, conv, **options)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_conv_input(self, input)
        if not self.training:
            mask = self._weight_mask(refresh=False)
            return self._conv_forward(input, self.weight if mask is None else self.weight * mask, self.bias)
        x, padding = pad_input(self, input)
        refresh = self._step()
        mask = self._weight_mask(refresh)
        x_saved = self._saved_activation(x, refresh)
        geometry = (self.stride, padding, self.dilation, self.groups)
        y = _TopKSparseConv2dFn.apply(x, x_saved, self.weight, self.bias, mask, geometry)
        self._record(mask, self.weight, x_saved, conv2d_macs(x.shape[0], output_hw(y), self.weight.shape))
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._topk_repr()}"
