r"""StrassenNets sum-product layers: a linear map computed with a budget of ``r`` multiplications.

A bilinear map such as a matrix product :math:`C = AB` is a two-layer sum-product network
:math:`\mathrm{vec}(C) = W_c\,[(W_b \mathrm{vec}(B)) \odot (W_a \mathrm{vec}(A))]` with ternary
:math:`W_a, W_b, W_c \in \{-1, 0, 1\}`; Strassen's algorithm is such a network with ``r = 7`` for 2×2 matrices.
In a layer the weight :math:`A` is fixed after training, so :math:`\tilde a = W_a \mathrm{vec}(A) \in \mathbb{R}^r`
is learned directly (Tschannen et al. 2018, Sec. 3):

.. math::

    y = W_c \bigl(\tilde a \odot \mathrm{BN}(W_b x)\bigr) + b,
    \qquad W_b \in \{-1,0,1\}^{r \times n}, \; W_c \in \{-1,0,1\}^{m \times r},

so the only multiplications are the ``r`` products with :math:`\tilde a`; :math:`W_b` and :math:`W_c` need only
additions and subtractions. The optional batch normalisation has no learned scale (:math:`\gamma = 1`, a learned
shift :math:`\beta`) and folds into :math:`\tilde a` and the bias after training, like the TWN scales
:math:`\alpha` (:meth:`SumProductLinear.fold`).

For a convolution (``SumProductConv2d``), :math:`W_b` is a convolution with ``r`` output channels, kernel
:math:`(p-1)s + k` and stride :math:`p s`, computing ``r`` values per output patch of :math:`p \times p` pixels, and
:math:`W_c` a transposed convolution with kernel and stride ``p`` that spreads each patch back (out_patch ``p``).
The multiplications fall from :math:`c_{in} c_{out} k^2 p^2` to ``r`` per patch.

Training follows the paper's stages (:data:`STAGES`, set with :meth:`set_stage`):

``"full_precision"``
    :math:`W_b`, :math:`W_c` real-valued;
``"ternary"``
    :math:`W_b`, :math:`W_c` ternarised in the forward pass by the TWN rule (Li et al. 2016):
    :math:`\Delta = 0.7\,\mathrm{mean}|w|`, :math:`q = \mathrm{sign}(w)\,[|w| > \Delta]`, :math:`\alpha =
    \mathrm{mean}_{q \neq 0}|w|`, used as :math:`\alpha q`, with a straight-through gradient to the real-valued
    latent weights. The threshold is relative to the weights' scale: an absolute ±0.5 threshold (the fixed
    ``ter_quant`` of the authors' VGG script) zeroes the small weights that precede batch normalisation;
``"frozen_ternary"``
    :math:`W_b`, :math:`W_c` fixed at their ternary values; :math:`\tilde a`, the batch-norm shift, the bias and
    the rest of the network keep training.

Costs (:attr:`multiplications`, :attr:`additions`) are those of the deployed ternary form, per example (per
input image for the convolution, at the last input size): ``r`` multiplications per output patch, and one
addition per non-zero ternary entry of :math:`W_b` and :math:`W_c` per patch, the paper's convention.
``nparams = r·(in + out) + r`` counts each ternary entry as one stored number (2 bits each: see ``nbits``).

References
----------
.. [1] M. Tschannen, A. Khanna, A. Anandkumar, "StrassenNets: Deep Learning with a Multiplication Budget",
       ICML 2018 (arXiv:1712.03942), Sec. 3 (eq. (2)-(4)) and Sec. 4.
.. [2] F. Li, B. Zhang, B. Liu, "Ternary Weight Networks", arXiv:1605.04711, 2016, eq. (6) and (8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from structmat._validation import check_positive_int

__all__ = ["STAGES", "SumProductLinear", "SumProductConv2d", "SumProductFactors", "ternarize", "ternary_codes"]

#: The training stages of the sum-product layers, in the order the paper runs them.
STAGES = ("full_precision", "ternary", "frozen_ternary")

#: Batch-norm settings of the authors' MXNet code (eps 1e-3, moving-average momentum 0.9 = torch's 0.1).
_BN_OPTIONS = dict(affine=False, eps=1e-3, momentum=0.1)


def ternary_codes(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""TWN codes and scale of ``weight``: ``q ∈ {-1, 0, 1}`` (same shape) and ``α``, with ``α q ≈ weight``."""
    magnitude = weight.detach().abs()
    delta = 0.7 * magnitude.mean()
    q = torch.sign(weight.detach()) * (magnitude > delta)
    kept = q != 0
    alpha = magnitude[kept].mean() if bool(kept.any()) else magnitude.new_zeros(())
    return q, alpha


def ternarize(weight: torch.Tensor) -> torch.Tensor:
    """``α q`` by the TWN rule, with a straight-through (identity) gradient to ``weight``."""
    q, alpha = ternary_codes(weight)
    return weight + (alpha * q - weight).detach()


class _SumProductMixin:
    """The stage, ``ã``, the batch normalisation and the effective factors shared by both layers."""

    def _init_sum_product(self, r: int, batchnorm: bool, bn_module, device, dtype) -> None:
        self.scale = nn.Parameter(torch.ones(r, device=device, dtype=dtype))  # ã
        if batchnorm:
            self.bn = bn_module(r, device=device, dtype=dtype, **_BN_OPTIONS)
            self.bn_shift = nn.Parameter(torch.zeros(r, device=device, dtype=dtype))
        else:
            self.bn = None
            self.register_parameter("bn_shift", None)
        self.stage = "full_precision"

    @property
    def num_multiplications(self) -> int:
        return self.scale.numel()

    def set_stage(self, stage: str) -> None:
        """Switch to a training stage of :data:`STAGES` (``frozen_ternary`` stops the gradients of the factors)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}; got {stage!r}")
        self.stage = stage
        for weight in (self.weight_b, self.weight_c):
            weight.requires_grad_(stage != "frozen_ternary")

    def effective_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_b, W_c)`` as the current stage uses them: real-valued, or ``α q`` (straight-through)."""
        if self.stage == "full_precision":
            return self.weight_b, self.weight_c
        return ternarize(self.weight_b), ternarize(self.weight_c)

    def _multiply(self, z: torch.Tensor, channel_shape) -> torch.Tensor:
        """``ã ⊙ BN(z)`` with ``ã`` and ``β`` broadcast over ``channel_shape``."""
        if self.bn is not None:
            z = self.bn(z) + self.bn_shift.view(channel_shape)
        return z * self.scale.view(channel_shape)

    @property
    def nparams(self) -> int:
        """``r·(in + out) + r``: every ternary entry of ``W_b``, ``W_c`` plus ``ã`` (bias separate)."""
        return self.weight_b.numel() + self.weight_c.numel() + self.scale.numel()

    @property
    def nbits(self) -> int:
        """Bits of the deployed form: 2 per ternary entry, 32 per entry of ``ã`` (bias separate)."""
        return 2 * (self.weight_b.numel() + self.weight_c.numel()) + 32 * self.scale.numel()

    def _nonzeros(self) -> int:
        return int(torch.count_nonzero(ternary_codes(self.weight_b)[0])
                   + torch.count_nonzero(ternary_codes(self.weight_c)[0]))

    def _sum_product_repr(self) -> str:
        return f"num_multiplications={self.num_multiplications}, batchnorm={self.bn is not None}, stage={self.stage}"


@dataclass(frozen=True)
class SumProductFactors:
    """The deployed form of a :class:`SumProductLinear`: ``y = W_c (scale ⊙ (W_b x)) + bias``.

    ``weight_b`` (r, in) and ``weight_c`` (out, r) are int8 in {-1, 0, 1}; ``scale`` (r,) absorbs ``ã``, the TWN
    scales and the batch normalisation; ``bias`` (out,) absorbs the batch-norm shift. Arrays are float64 / int8.
    """

    weight_b: np.ndarray
    scale: np.ndarray
    weight_c: np.ndarray
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x`` of shape ``(batch, in)`` → ``(batch, out)``: additions, ``r`` multiplications per row."""
        return ((x @ self.weight_b.T) * self.scale) @ self.weight_c.T + self.bias


class SumProductLinear(_SumProductMixin, nn.Module):
    """``y = W_c (ã ⊙ BN(W_b x)) + b`` with ``r`` multiplications per example (StrassenNets, Tschannen et al. 2018).

    Parameters
    ----------
    in_features, out_features, bias, device, dtype
        As ``nn.Linear``.
    num_multiplications : int >= 1
        ``r``, the width of the hidden product layer: the multiplication budget per example.
    batchnorm : bool
        Normalise ``W_b x`` (no learned scale, a learned shift) before multiplying by ``ã``, as the paper does.

    Attributes
    ----------
    weight_b : Parameter of shape (r, in_features)
    weight_c : Parameter of shape (out_features, r)
    scale : Parameter of shape (r,)
        ``ã``, initialised to one.
    stage : str
        One of :data:`STAGES`; change it with :meth:`set_stage`.

    Examples
    --------
    >>> import torch
    >>> layer = SumProductLinear(8, 4, num_multiplications=3)
    >>> layer(torch.randn(5, 8)).shape, layer.multiplications, layer.nparams
    (torch.Size([5, 4]), 3, 39)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, num_multiplications: int,
                 batchnorm: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        r = check_positive_int(num_multiplications, "num_multiplications")
        self.weight_b = nn.Parameter(torch.empty(r, in_features, device=device, dtype=dtype))
        self.weight_c = nn.Parameter(torch.empty(out_features, r, device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self._init_sum_product(r, batchnorm, nn.BatchNorm1d, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s uniform initialisation for each factor (fan-in ``in_features`` and ``r``), ``ã = 1``."""
        for weight in (self.weight_b, self.weight_c):
            bound = 1.0 / math.sqrt(weight.shape[1])
            nn.init.uniform_(weight, -bound, bound)
        nn.init.ones_(self.scale)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linear(cls, linear: nn.Linear, num_multiplications: int, *, batchnorm: bool = False
                    ) -> "SumProductLinear":
        """A full-precision layer initialised from ``linear``'s truncated SVD ``W ≈ U S Vᵀ`` (structmat's warm
        start; the paper trains from scratch): ``W_b = Vᵀ``, ``ã = S``, ``W_c = U``, and the bias copied.

        Without batch normalisation and with ``r >= rank(W)`` the layer computes ``linear`` exactly; beyond
        ``min(in, out)`` the extra rows of ``W_b`` are random and the extra columns of ``W_c`` zero.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear; got {type(linear).__name__}")
        weight = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    num_multiplications=num_multiplications, batchnorm=batchnorm, device=weight.device,
                    dtype=weight.dtype)
        _svd_init(layer, weight.double())
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias)
        return layer

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.shape[-1:] != (self.in_features,):
            raise ValueError(f"SumProductLinear expects input of shape (..., {self.in_features}); "
                             f"got {tuple(input.shape)}")
        weight_b, weight_c = self.effective_factors()
        x = input.reshape(-1, self.in_features)
        y = F.linear(self._multiply(F.linear(x, weight_b), (1, -1)), weight_c, self.bias)
        return y.reshape(*input.shape[:-1], self.out_features)

    @property
    def multiplications(self) -> int:
        """Multiplications per example of the deployed form: ``r``."""
        return self.num_multiplications

    @property
    def additions(self) -> int:
        """Additions per example of the deployed form: the non-zeros of the ternary ``W_b`` and ``W_c``."""
        return self._nonzeros()

    @property
    def dense_multiplications(self) -> int:
        return self.in_features * self.out_features

    def fold(self) -> SumProductFactors:
        """The deployed form, with ``α``, ``ã`` and the batch normalisation (running statistics) folded into one
        scale vector and the bias; equals the layer in evaluation mode.

        Raises
        ------
        ValueError
            in the ``"full_precision"`` stage, whose factors are not ternary.
        """
        if self.stage == "full_precision":
            raise ValueError("fold() needs a ternary stage ('ternary' or 'frozen_ternary'); the layer is in "
                             "'full_precision'")
        q_b, alpha_b = (t.double().cpu() for t in ternary_codes(self.weight_b))
        q_c, alpha_c = (t.double().cpu() for t in ternary_codes(self.weight_c))
        scale = self.scale.detach().double().cpu() * alpha_b * alpha_c
        shift = torch.zeros_like(scale)
        if self.bn is not None:
            inv_std = 1.0 / torch.sqrt(self.bn.running_var.double().cpu() + self.bn.eps)
            shift = self.scale.detach().double().cpu() * (self.bn_shift.detach().double().cpu()
                                                          - self.bn.running_mean.double().cpu() * inv_std)
            scale = scale * inv_std
        bias = alpha_c * (q_c @ shift)
        if self.bias is not None:
            bias = bias + self.bias.detach().double().cpu()
        return SumProductFactors(q_b.numpy().astype(np.int8), scale.numpy(), q_c.numpy().astype(np.int8),
                                 bias.numpy())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{self._sum_product_repr()}")


def _svd_init(layer, weight: torch.Tensor) -> None:
    """``W_b = Vᵀ``, ``ã = S``, ``W_c = U`` from the SVD of a 2-D float64 ``weight`` (out, in·k·k)."""
    U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
    r = layer.num_multiplications
    k = min(r, S.numel())
    with torch.no_grad():
        weight_b = layer.weight_b.view(r, -1)
        weight_c = layer.weight_c.view(r, -1) if layer.weight_c.dim() == 4 else layer.weight_c.T
        weight_b[:k] = Vh[:k].to(weight_b.dtype)
        weight_c.zero_()
        weight_c[:k] = U[:, :k].T.to(weight_c.dtype)
        layer.scale.fill_(1.0)
        layer.scale[:k] = S[:k].to(layer.scale.dtype)


class SumProductConv2d(_SumProductMixin, nn.Module):
    r"""A convolution computed as a sum-product network with ``r`` multiplications per output patch.

    ``W_b`` is a convolution ``c_in → r`` with kernel :math:`(p-1)s + k` and stride :math:`p s`; after the batch
    normalisation and ``ã``, ``W_c`` is a transposed convolution ``r → c_out`` with kernel and stride ``p``. The
    input is padded by ``padding`` on the top/left, and on the bottom/right by whatever the last patch needs; the
    output is cropped to the size of the convolution it replaces,
    :math:`\lfloor (H + 2\,\mathrm{pad} - k)/s \rfloor + 1`. With ``r = c_out p^2``, ``W_b`` holding the filter at
    each of the :math:`p^2` offsets and ``W_c`` placing them, it equals that convolution exactly.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, bias, device, dtype
        As ``nn.Conv2d`` (integer or pair padding with zeros; no dilation or groups).
    num_multiplications : int >= 1
        ``r``: multiplications per output patch.
    out_patch : int or (int, int)
        ``p``: the output patch computed from one set of ``r`` products.
    batchnorm : bool
        As :class:`SumProductLinear`.

    Attributes
    ----------
    weight_b : Parameter of shape (r, in_channels, (p-1)s + k, (p-1)s + k)
    weight_c : Parameter of shape (r, out_channels, p, p)
        ``conv_transpose2d`` layout.
    scale : Parameter of shape (r,)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True,
                 *, num_multiplications: int, out_patch=1, batchnorm: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.kernel_size, self.stride, self.padding, self.out_patch = (
            _pair(kernel_size), _pair(stride), _pair(padding), _pair(out_patch))
        for name, pair, minimum in (("kernel_size", self.kernel_size, 1), ("stride", self.stride, 1),
                                    ("padding", self.padding, 0), ("out_patch", self.out_patch, 1)):
            for value in pair:
                check_positive_int(value, name, minimum)
        r = check_positive_int(num_multiplications, "num_multiplications")
        span = tuple((p - 1) * s + k for p, s, k in zip(self.out_patch, self.stride, self.kernel_size))
        self.weight_b = nn.Parameter(torch.empty(r, in_channels, *span, device=device, dtype=dtype))
        self.weight_c = nn.Parameter(torch.empty(r, out_channels, *self.out_patch, device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self._init_sum_product(r, batchnorm, nn.BatchNorm2d, device, dtype)
        self._last_patches: tuple[int, int] | None = None
        self._last_output_hw: tuple[int, int] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform ``±1/sqrt(fan_in)`` for both factors (fan-in ``c_in·K²`` and ``r``), ``ã = 1``."""
        fan_b = self.weight_b[0].numel()
        nn.init.uniform_(self.weight_b, -1.0 / math.sqrt(fan_b), 1.0 / math.sqrt(fan_b))
        nn.init.uniform_(self.weight_c, -1.0 / math.sqrt(self.num_multiplications),
                         1.0 / math.sqrt(self.num_multiplications))
        nn.init.ones_(self.scale)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, num_multiplications: int, *, batchnorm: bool = False
                    ) -> "SumProductConv2d":
        """A full-precision ``out_patch=1`` layer from the truncated SVD of ``conv``'s weight reshaped to
        ``(c_out, c_in·k_h·k_w)`` (exact without batch normalisation when ``r`` reaches its rank)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d; got {type(conv).__name__}")
        if conv.groups != 1 or conv.dilation != (1, 1) or isinstance(conv.padding, str) \
                or conv.padding_mode != "zeros":
            raise ValueError("SumProductConv2d replaces convolutions with groups=1, dilation=1 and integer zero "
                             f"padding; got {conv}")
        weight = conv.weight.detach()
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.bias is not None, num_multiplications=num_multiplications, batchnorm=batchnorm,
                    device=weight.device, dtype=weight.dtype)
        _svd_init(layer, weight.double().reshape(conv.out_channels, -1))
        if conv.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(conv.bias)
        return layer

    def _output_size(self, h: int, w: int) -> tuple[int, int]:
        return tuple((size + 2 * pad - k) // s + 1 for size, pad, k, s in
                     zip((h, w), self.padding, self.kernel_size, self.stride))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() != 4 or input.shape[1] != self.in_channels:
            raise ValueError(f"SumProductConv2d expects input of shape (batch, {self.in_channels}, H, W); "
                             f"got {tuple(input.shape)}")
        out_hw = self._output_size(input.shape[2], input.shape[3])
        if min(out_hw) < 1:
            raise ValueError(f"input of spatial size {tuple(input.shape[2:])} is smaller than the kernel "
                             f"{self.kernel_size} with padding {self.padding}")
        patches = tuple(math.ceil(o / p) for o, p in zip(out_hw, self.out_patch))
        spans = self.weight_b.shape[2:]
        extra = [max(0, (n - 1) * p * s + span - pad - size) for n, p, s, span, pad, size in
                 zip(patches, self.out_patch, self.stride, spans, self.padding, input.shape[2:])]
        x = F.pad(input, (self.padding[1], extra[1], self.padding[0], extra[0]))
        weight_b, weight_c = self.effective_factors()
        strides = tuple(p * s for p, s in zip(self.out_patch, self.stride))
        z = F.conv2d(x, weight_b, stride=strides)[:, :, :patches[0], :patches[1]]
        y = F.conv_transpose2d(self._multiply(z, (1, -1, 1, 1)), weight_c, stride=self.out_patch)
        y = y[:, :, :out_hw[0], :out_hw[1]]
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        self._last_patches, self._last_output_hw = patches, out_hw
        return y

    def _per_image(self, per_patch: int) -> int | None:
        if self._last_patches is None:
            return None
        return per_patch * self._last_patches[0] * self._last_patches[1]

    @property
    def multiplications(self) -> int | None:
        """Multiplications per image of the deployed form at the last input size: ``r`` per output patch."""
        return self._per_image(self.num_multiplications)

    @property
    def additions(self) -> int | None:
        """Additions per image at the last input size: the ternary non-zeros of ``W_b`` and ``W_c`` per patch."""
        return self._per_image(self._nonzeros())

    @property
    def dense_multiplications(self) -> int | None:
        """Multiplications per image of the convolution this layer replaces, at the last input size."""
        if self._last_output_hw is None:
            return None
        kh, kw = self.kernel_size
        return self.out_channels * self.in_channels * kh * kw * self._last_output_hw[0] * self._last_output_hw[1]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, out_patch={self.out_patch}, bias={self.bias is not None}, "
                f"{self._sum_product_repr()}")
