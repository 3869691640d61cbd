r"""``SampledLinear`` and ``SampledConv2d``: layers whose training products use sampled column-row pairs.

Drop-ins for ``nn.Linear`` / ``nn.Conv2d`` (they subclass them, so the weight, bias, initialisation and
``state_dict`` keys are the same) that compute their products during training from
:math:`k = \min(\max(\lceil \rho n \rceil, k_{\min}), n)` column-row pairs chosen by the product of norms
(:mod:`structmat.training.sampling`). Evaluation mode is exact. Three modes:

``"forward"``
    the forward product is sampled (a linear layer samples input features, a convolution input channels) and
    autograd runs through the sampled product, so both gradients only involve the kept pairs, with the same
    scaling. The authors found this the best in practice [1]_.
``"backward"``
    exact forward; the input gradient ``dx = dy W`` samples output features / channels and the weight
    gradient ``dW = dyᵀ x`` samples the examples of the batch, each with its own ratio
    (``sample_ratio_input_grad``, ``sample_ratio_weight_grad``, defaulting to ``sample_ratio``).
``"blackbox"``
    sampled forward, but the backward pass is the exact layer's, as if the forward had been exact.

The weight stays an ordinary dense parameter: these layers save training compute and leave the model unchanged.
``nparams`` counts its weights (the bias is separate). ``last_cost`` holds the multiply-adds of the last training
step (:class:`structmat.training.cost.TrainingCost`) and ``last_num_pairs`` the pairs each product used.

References
----------
.. [1] M. Adelman, K. Levy, I. Hakimi, M. Silberstein, "Faster Neural Network Training with Approximate Tensor
       Operations", NeurIPS 2021 (arXiv:1805.08079), Sec. 3-4.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from structmat.training._conv import (check_conv_input, conv_input_grad, conv_weight_grad, output_hw,
                                      pad_input)
from structmat.training._copy import copied_layer
from structmat.training.cost import TrainingCost, conv2d_macs, linear_macs
from structmat.training.sampling import PairSampler, sampled_matmul

__all__ = ["SampledLinear", "SampledConv2d", "MODES"]

#: The training modes of the sampled layers.
MODES = ("forward", "backward", "blackbox")


def _norms(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Euclidean norms of the slices of ``t`` along ``dim`` (over every other dimension)."""
    return torch.linalg.vector_norm(t.transpose(0, dim).reshape(t.shape[dim], -1), dim=1)


class _SamplingMixin:
    """Sampler configuration, seeded generators and step statistics shared by the two layers."""

    def _init_sampling(self, sample_ratio, minimal_k, scheme, mode, sample_ratio_input_grad, minimal_k_input_grad,
                       sample_ratio_weight_grad, minimal_k_weight_grad, eps, seed) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        backward_options = (sample_ratio_input_grad, minimal_k_input_grad, sample_ratio_weight_grad,
                            minimal_k_weight_grad)
        if mode != "backward" and any(v is not None for v in backward_options):
            raise ValueError("sample_ratio_input_grad, minimal_k_input_grad, sample_ratio_weight_grad and "
                             f"minimal_k_weight_grad apply to mode='backward' only; got mode={mode!r}")
        self.mode = mode
        self.forward_sampler = PairSampler(sample_ratio, minimal_k, scheme, eps)
        self.input_grad_sampler = PairSampler(
            sample_ratio if sample_ratio_input_grad is None else sample_ratio_input_grad,
            minimal_k if minimal_k_input_grad is None else minimal_k_input_grad, scheme, eps)
        self.weight_grad_sampler = PairSampler(
            sample_ratio if sample_ratio_weight_grad is None else sample_ratio_weight_grad,
            minimal_k if minimal_k_weight_grad is None else minimal_k_weight_grad, scheme, eps)
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())  # follows torch.manual_seed
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int or None; got {type(seed).__name__} {seed!r}")
        self.seed = int(seed)
        self._generators: dict = {}
        #: Multiply-adds of the last training step; None before the first.
        self.last_cost: TrainingCost | None = None
        #: Pairs used by each product in the last training step, e.g. {"forward": 32}.
        self.last_num_pairs: dict[str, int] = {}

    @property
    def scheme(self) -> str:
        return self.forward_sampler.scheme

    @property
    def sample_ratio(self) -> float:
        return self.forward_sampler.sample_ratio

    @property
    def minimal_k(self) -> int:
        return self.forward_sampler.minimal_k

    @property
    def nparams(self) -> int:
        return self.weight.numel()

    def _generator(self, device) -> torch.Generator:
        device = torch.device(device)
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def _sampling_repr(self) -> str:
        if self.mode == "backward":
            text = (f"mode=backward, input_grad=({self.input_grad_sampler.sample_ratio}, "
                    f"minimal_k={self.input_grad_sampler.minimal_k}), weight_grad=("
                    f"{self.weight_grad_sampler.sample_ratio}, minimal_k={self.weight_grad_sampler.minimal_k})")
        else:
            text = f"mode={self.mode}, sample_ratio={self.sample_ratio}, minimal_k={self.minimal_k}"
        return f"{text}, scheme={self.scheme}"

    def _record(self, forward_pairs, input_grad_pairs, weight_grad_pairs, totals, dense) -> None:
        """Set ``last_num_pairs`` and ``last_cost`` from the pairs each product used out of ``totals``."""
        used = {"forward": forward_pairs, "input_grad": input_grad_pairs, "weight_grad": weight_grad_pairs}
        self.last_num_pairs = used
        self.last_cost = TrainingCost(*(dense * used[key] / totals[key] for key in used), dense=dense)


# ------------------------------------------------------------------------------------------------ linear
class _BackwardSampledLinear(torch.autograd.Function):
    """Exact ``x Wᵀ + b``; backward samples output features for ``dx`` and batch rows for ``dW``."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer):
        ctx.save_for_backward(x, weight)
        ctx.layer = layer
        return F.linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        layer = ctx.layer
        generator = layer._generator(x.device)
        grad_x = grad_weight = grad_bias = None
        k_input = layer.input_grad_sampler.num_pairs(weight.shape[0])
        k_weight = layer.weight_grad_sampler.num_pairs(x.shape[0])
        if ctx.needs_input_grad[0]:  # dx = dy W: pairs are output features
            grad_x, k_input = sampled_matmul(grad_output, weight, layer.input_grad_sampler, generator)
        if ctx.needs_input_grad[1]:  # dW = dyᵀ x: pairs are the rows of the batch
            grad_weight, k_weight = sampled_matmul(grad_output.T, x, layer.weight_grad_sampler, generator)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum(0)
        dense = linear_macs(x.shape[0], weight.shape[1], weight.shape[0])
        layer._record(weight.shape[1], k_input, k_weight,
                      {"forward": weight.shape[1], "input_grad": weight.shape[0], "weight_grad": x.shape[0]}, dense)
        return grad_x, grad_weight, grad_bias, None


class _BlackBoxLinear(torch.autograd.Function):
    """Sampled forward over input features; the exact layer's backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, indices, scale):
        ctx.save_for_backward(x, weight)
        x_kept = x.index_select(1, indices)
        if scale is not None:
            x_kept = x_kept * scale
        return F.linear(x_kept, weight.index_select(1, indices), bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        grad_x = grad_output @ weight if ctx.needs_input_grad[0] else None
        grad_weight = grad_output.T @ x if ctx.needs_input_grad[1] else None
        grad_bias = grad_output.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None, None


class SampledLinear(_SamplingMixin, nn.Linear):
    r"""``nn.Linear`` whose training products use sampled column-row pairs (Adelman et al. 2021).

    Parameters
    ----------
    in_features, out_features, bias, device, dtype
        As ``nn.Linear``.
    sample_ratio : float in (0, 1]
        Share of the pairs kept: input features in the forward product. 1.0 is exact.
    minimal_k : int >= 1
        Never fewer pairs than this: ``k = min(max(ceil(sample_ratio * n), minimal_k), n)``.
    scheme : {"topk", "crs", "bernoulli"}
        Deterministic top-k by ``||x[:, i]|| ||W[:, i]||``; CRS with replacement (scaled ``1/(k p)``);
        Bernoulli-CRS (scaled ``1/p``). See :mod:`structmat.training.sampling`.
    mode : {"forward", "backward", "blackbox"}
        Which products are sampled (see the module docstring).
    sample_ratio_input_grad, minimal_k_input_grad, sample_ratio_weight_grad, minimal_k_weight_grad
        ``mode="backward"`` only: the ratio and floor of the input-gradient product (pairs are output features)
        and of the weight-gradient product (pairs are the rows of the batch); None means ``sample_ratio`` /
        ``minimal_k``.
    eps : float in [0, 1]
        Uniform share mixed into the randomised schemes' distribution (0.1 as in the authors' code).
    seed : int, optional
        Seed of the layer's own generator (randomised schemes); None draws one from torch's global generator.

    Notes
    -----
    Input of shape ``(..., in_features)`` is flattened to rows for the scores: input feature ``i`` scores
    :math:`\lVert X_{:,i}\rVert_2 \lVert W_{:,i}\rVert_2` over the whole batch. Evaluation mode runs
    ``F.linear``.

    Examples
    --------
    >>> import torch
    >>> layer = SampledLinear(8, 4, sample_ratio=0.5)
    >>> y = layer(torch.randn(3, 8)); layer.last_num_pairs["forward"]
    4
    >>> _ = layer.eval(); bool(torch.allclose(layer(torch.ones(1, 8)), torch.nn.functional.linear(
    ...     torch.ones(1, 8), layer.weight, layer.bias)))
    True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, sample_ratio: float = 1.0,
                 minimal_k: int = 1, scheme: str = "topk", mode: str = "forward",
                 sample_ratio_input_grad: float | None = None, minimal_k_input_grad: int | None = None,
                 sample_ratio_weight_grad: float | None = None, minimal_k_weight_grad: int | None = None,
                 eps: float = 0.1, seed: int | None = None, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_sampling(sample_ratio, minimal_k, scheme, mode, sample_ratio_input_grad, minimal_k_input_grad,
                            sample_ratio_weight_grad, minimal_k_weight_grad, eps, seed)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options) -> "SampledLinear":
        """A sampled layer with ``linear``'s weight, bias, device and dtype (copies)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear; got {type(linear).__name__}")
        return copied_layer(cls, linear, **options)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.shape[-1:] != (self.in_features,):
            raise ValueError(f"SampledLinear expects input of shape (..., {self.in_features}); "
                             f"got {tuple(input.shape)}")
        if not self.training:
            return F.linear(input, self.weight, self.bias)
        x = input.reshape(-1, self.in_features)
        batch, n = x.shape[0], self.in_features
        dense = linear_macs(batch, n, self.out_features)
        totals = {"forward": n, "input_grad": self.out_features, "weight_grad": batch}
        if self.mode == "backward":
            self._record(n, self.out_features, batch, totals, dense)  # refined by the backward pass
            y = _BackwardSampledLinear.apply(x, self.weight, self.bias, self)
        else:
            sample = None
            if not self.forward_sampler.is_exact(n):
                with torch.no_grad():
                    scores = torch.linalg.vector_norm(x, dim=0) * torch.linalg.vector_norm(self.weight, dim=0)
                sample = self.forward_sampler.sample(scores, self._generator(x.device))
            if sample is None:
                y, used = F.linear(x, self.weight, self.bias), n
            else:
                indices, scale = sample
                used = indices.numel()
                if self.mode == "forward":
                    x_kept = x.index_select(1, indices)
                    if scale is not None:
                        x_kept = x_kept * scale
                    y = F.linear(x_kept, self.weight.index_select(1, indices), self.bias)
                else:
                    y = _BlackBoxLinear.apply(x, self.weight, self.bias, indices, scale)
            if self.mode == "forward":  # both gradients only involve the kept input features
                self._record(used, used, used, dict.fromkeys(totals, n), dense)
            else:  # blackbox: the backward is the exact layer's
                self._record(used, self.out_features, batch, totals, dense)
        return y.reshape(*input.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._sampling_repr()}"


# ------------------------------------------------------------------------------------------------ conv2d
class _BackwardSampledConv2d(torch.autograd.Function):
    """Exact convolution; backward samples output channels for ``dx`` and examples for ``dW``."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer, padding):
        ctx.save_for_backward(x, weight)
        ctx.layer, ctx.padding = layer, padding
        return F.conv2d(x, weight, bias, layer.stride, padding, layer.dilation)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        layer, padding = ctx.layer, ctx.padding
        geometry = (layer.stride, padding, layer.dilation, 1)
        generator = layer._generator(x.device)
        c_out, batch = weight.shape[0], x.shape[0]
        k_input = layer.input_grad_sampler.num_pairs(c_out)
        k_weight = layer.weight_grad_sampler.num_pairs(batch)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # dx sums over output channels
            sample = None
            if not layer.input_grad_sampler.is_exact(c_out):
                sample = layer.input_grad_sampler.sample(_norms(weight, 0) * _norms(grad_output, 1), generator)
            if sample is None:
                grad_x, k_input = conv_input_grad(x.shape, weight, grad_output, *geometry), c_out
            else:
                idx, scale = sample
                g = grad_output.index_select(1, idx)
                if scale is not None:
                    g = g * scale.view(1, -1, 1, 1)
                grad_x, k_input = conv_input_grad(x.shape, weight.index_select(0, idx), g, *geometry), idx.numel()
        if ctx.needs_input_grad[1]:  # dW sums over the examples of the batch
            sample = None
            if not layer.weight_grad_sampler.is_exact(batch):
                sample = layer.weight_grad_sampler.sample(_norms(x, 0) * _norms(grad_output, 0), generator)
            if sample is None:
                grad_weight, k_weight = conv_weight_grad(x, weight.shape, grad_output, *geometry), batch
            else:
                idx, scale = sample
                x_kept = x.index_select(0, idx)
                if scale is not None:
                    x_kept = x_kept * scale.view(-1, 1, 1, 1)
                grad_weight = conv_weight_grad(x_kept, weight.shape, grad_output.index_select(0, idx), *geometry)
                k_weight = idx.numel()
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum((0, 2, 3))
        dense = conv2d_macs(batch, output_hw(grad_output), weight.shape)
        layer._record(weight.shape[1], k_input, k_weight,
                      {"forward": weight.shape[1], "input_grad": c_out, "weight_grad": batch}, dense)
        return grad_x, grad_weight, grad_bias, None, None


class _BlackBoxConv2d(torch.autograd.Function):
    """Convolution over sampled input channels; the exact convolution's backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, indices, scale, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation, 1)
        x_kept = x.index_select(1, indices)
        if scale is not None:
            x_kept = x_kept * scale.view(1, -1, 1, 1)
        return F.conv2d(x_kept, weight.index_select(1, indices), bias, stride, padding, dilation)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        grad_x = conv_input_grad(x.shape, weight, grad_output, *ctx.geometry) if ctx.needs_input_grad[0] else None
        grad_weight = (conv_weight_grad(x, weight.shape, grad_output, *ctx.geometry)
                       if ctx.needs_input_grad[1] else None)
        grad_bias = grad_output.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


class SampledConv2d(_SamplingMixin, nn.Conv2d):
    r"""``nn.Conv2d`` whose training products use sampled pairs (Adelman et al. 2021).

    The forward product samples **input channels** :math:`c`, scored by
    :math:`\lVert X_{:,c}\rVert_F \lVert W_{:,c}\rVert_F`; in ``mode="backward"`` the input gradient samples
    output channels and the weight gradient the examples of the batch.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, bias, padding_mode, device, dtype
        As ``nn.Conv2d`` (``groups`` must be 1: sampling input channels would break the groups).
    sample_ratio, minimal_k, scheme, mode, sample_ratio_input_grad, minimal_k_input_grad,
    sample_ratio_weight_grad, minimal_k_weight_grad, eps, seed
        As :class:`SampledLinear`.

    Raises
    ------
    ValueError
        ``groups != 1``, or a bad sampling option.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, sample_ratio: float = 1.0,
                 minimal_k: int = 1, scheme: str = "topk", mode: str = "forward",
                 sample_ratio_input_grad: float | None = None, minimal_k_input_grad: int | None = None,
                 sample_ratio_weight_grad: float | None = None, minimal_k_weight_grad: int | None = None,
                 eps: float = 0.1, seed: int | None = None, device=None, dtype=None) -> None:
        if groups != 1:
            raise ValueError(f"SampledConv2d samples input channels and needs groups=1; got groups={groups}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        self._init_sampling(sample_ratio, minimal_k, scheme, mode, sample_ratio_input_grad, minimal_k_input_grad,
                            sample_ratio_weight_grad, minimal_k_weight_grad, eps, seed)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, **options) -> "SampledConv2d":
        """A sampled layer with ``conv``'s geometry, weight, bias, device and dtype (copies)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d; got {type(conv).__name__}")
        return copied_layer(cls, conv, **options)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_conv_input(self, input)
        if not self.training:
            return self._conv_forward(input, self.weight, self.bias)
        x, padding = pad_input(self, input)
        n, batch = self.in_channels, x.shape[0]
        totals = {"forward": n, "input_grad": self.out_channels, "weight_grad": batch}
        if self.mode == "backward":
            y = _BackwardSampledConv2d.apply(x, self.weight, self.bias, self, padding)
            self._record(n, self.out_channels, batch, totals, conv2d_macs(batch, output_hw(y), self.weight.shape))
            return y
        sample = None
        if not self.forward_sampler.is_exact(n):
            with torch.no_grad():
                scores = _norms(x, 1) * _norms(self.weight, 1)
            sample = self.forward_sampler.sample(scores, self._generator(x.device))
        if sample is None:
            y, used = F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation), n
        else:
            indices, scale = sample
            used = indices.numel()
            if self.mode == "forward":
                x_kept = x.index_select(1, indices)
                if scale is not None:
                    x_kept = x_kept * scale.view(1, -1, 1, 1)
                y = F.conv2d(x_kept, self.weight.index_select(1, indices), self.bias, self.stride, padding,
                             self.dilation)
            else:
                y = _BlackBoxConv2d.apply(x, self.weight, self.bias, indices, scale, self.stride, padding,
                                          self.dilation)
        dense = conv2d_macs(batch, output_hw(y), self.weight.shape)
        if self.mode == "forward":  # both gradients only involve the kept input channels
            self._record(used, used, used, dict.fromkeys(totals, n), dense)
        else:  # blackbox: the backward is the exact layer's
            self._record(used, self.out_channels, batch, totals, dense)
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._sampling_repr()}"
