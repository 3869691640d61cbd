"""``StructuredLinear``: the torch side of a structured matrix, a drop-in for ``nn.Linear``.

A family layer supplies ``_build_from_matrix`` (copy a matrix's arrays into parameters), ``to_matrix`` (a float64
copy back) and ``_weight_product(x)`` (``x @ Wᵀ`` for 2-D ``x`` of shape ``(batch, in_features)``, with torch ops
so autograd works and never forming the dense matrix when that would cost more). The base handles inputs of
shape ``(..., in_features)``, the bias, construction from a matrix or an ``nn.Linear``, and ``extra_repr``.
Round trip: ``L.from_matrix(M).to_matrix()`` equals ``M`` to float32 rounding and
``L(x) ≈ x @ M.to_dense().T + b``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from structmat.matrices.base import StructuredMatrix

__all__ = ["StructuredLinear", "layer_from_matrix"]


class StructuredLinear(nn.Module):
    """Base class of the structured layers: ``y = x Wᵀ + b`` with ``W`` held in a structured form.

    Parameters
    ----------
    in_features, out_features : int
        As ``nn.Linear``; the weight has shape ``(out_features, in_features)``.
    bias : bool
        Whether to learn an additive bias (not counted in ``nparams``).
    """

    #: The registry key of the family this layer implements.
    family: ClassVar[str]

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device=None, dtype=None) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        #: Relative Frobenius error of the fit this layer was built from (set by ``from_linear``), else None.
        self.fit_error: float | None = None

    # ---------------------------------------------------------------- what a family supplies
    def _weight_product(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ Wᵀ`` for ``x`` of shape ``(batch, in_features)``."""
        raise NotImplementedError

    def to_matrix(self) -> StructuredMatrix:
        """The weight as a float64 :class:`StructuredMatrix` (a copy, detached from autograd)."""
        raise NotImplementedError

    @classmethod
    def _build_from_matrix(cls, M: StructuredMatrix, bias: bool, device, dtype) -> "StructuredLinear":
        """A layer holding ``M``'s arrays as parameters (bias left uninitialised)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- derived
    @property
    def nparams(self) -> int:
        """Stored weight numbers, as the matrix counts them (the bias is separate)."""
        return sum(p.numel() for name, p in self.named_parameters() if name != "bias")

    def reset_bias(self) -> None:
        """``nn.Linear``'s bias initialisation: uniform on ``±1/sqrt(in_features)``."""
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"{type(self).__name__} expects input of shape (..., {self.in_features}); got {tuple(input.shape)}"
            )
        x = input.reshape(-1, self.in_features)
        y = self._weight_product(x)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*input.shape[:-1], self.out_features)

    @classmethod
    def from_matrix(cls, M: StructuredMatrix, bias=None, *, device=None, dtype=torch.float32) -> "StructuredLinear":
        """A layer computing ``x @ M.to_dense().T + bias``; parameters in ``dtype`` (float32 by default).

        ``bias`` is None (no bias), or an array/tensor of shape ``(out_features,)``.
        """
        if not isinstance(M, StructuredMatrix):
            raise TypeError(f"M must be a StructuredMatrix; got {type(M).__name__}")
        if getattr(cls, "family", None) != M.family:
            raise TypeError(f"{cls.__name__} holds family {cls.family!r}; got a {M.family!r} matrix {M!r}")
        layer = cls._build_from_matrix(M, bias is not None, device, dtype)
        if bias is not None:
            b = torch.as_tensor(np.asarray(bias.detach().cpu() if torch.is_tensor(bias) else bias))
            if tuple(b.shape) != (M.shape[0],):
                raise ValueError(f"bias must have shape ({M.shape[0]},) to match M of shape {M.shape}; got {tuple(b.shape)}")
            with torch.no_grad():
                layer.bias.copy_(b.to(layer.bias.dtype))
        return layer

    @classmethod
    def from_linear(cls, linear: nn.Linear, budget, **options) -> "StructuredLinear":
        """Fit ``linear.weight`` under ``budget`` with this layer's family; copy the bias, device and dtype."""
        from structmat.approximators import approximate
        from structmat.metrics import relative_error

        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear; got {type(linear).__name__}")
        weight = linear.weight.detach().cpu().double().numpy()
        M = approximate(weight, cls.family, budget, **options)
        layer = cls.from_matrix(M, linear.bias, device=linear.weight.device, dtype=linear.weight.dtype)
        layer.fit_error = relative_error(weight, M)
        return layer

    def dense_weight(self) -> torch.Tensor:
        """The weight as a dense ``(out_features, in_features)`` tensor, through autograd (for checks)."""
        eye = torch.eye(self.in_features, device=self._any_param().device, dtype=self._any_param().dtype)
        return self._weight_product(eye).T

    def _any_param(self) -> torch.Tensor:
        return next(p for name, p in self.named_parameters() if name != "bias")

    def extra_repr(self) -> str:
        share = self.nparams / (self.in_features * self.out_features)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"nparams={self.nparams} ({100 * share:.1f}%)"
            + (f", {self._structure_repr()}" if self._structure_repr() else "")
        )

    def _structure_repr(self) -> str:
        return ""


def layer_from_matrix(M: StructuredMatrix, bias=None, **kwargs) -> StructuredLinear:
    """The family's layer built from ``M`` (looks the layer class up in the registry)."""
    from structmat.families import get_family

    return get_family(M.family).layer_class().from_matrix(M, bias, **kwargs)
