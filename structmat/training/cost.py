"""Multiply-add accounting of a training step: the three products of a layer (forward, input gradient, weight
gradient), as the approximate layers actually computed them, beside the exact layer's count.

Every linear or convolution layer runs three products per training step whose exact costs are equal:
``y = x Wᵀ`` (forward), ``dx = dy W`` (input gradient) and ``dW = dyᵀ x`` (weight gradient), each
``batch · in · out`` multiply-adds for a linear layer and ``batch · H_out · W_out · C_out · C_in/groups · k_h · k_w``
for a convolution. The training layers of :mod:`structmat.training` record what their last training step cost
in a :class:`TrainingCost`; :func:`model_training_cost` adds them up over a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["TrainingCost", "model_training_cost", "linear_macs", "conv2d_macs"]


@dataclass(frozen=True)
class TrainingCost:
    """Multiply-adds of one training step of one layer (or a sum of them).

    Attributes
    ----------
    forward, input_grad, weight_grad : float
        Multiply-adds spent on the forward product, the input-gradient product and the weight-gradient product.
    dense : float
        Multiply-adds of *one* exact product of the same layer(s) on the same batch; the exact step costs
        ``3 * dense``.
    """

    forward: float
    input_grad: float
    weight_grad: float
    dense: float

    @property
    def total(self) -> float:
        return self.forward + self.input_grad + self.weight_grad

    @property
    def reduction(self) -> float:
        """``1 - total / (3 dense)``: the share of the exact step's multiply-adds that were saved."""
        return 1.0 - self.total / (3.0 * self.dense) if self.dense else 0.0

    def __add__(self, other: "TrainingCost") -> "TrainingCost":
        if not isinstance(other, TrainingCost):
            return NotImplemented
        return TrainingCost(self.forward + other.forward, self.input_grad + other.input_grad,
                            self.weight_grad + other.weight_grad, self.dense + other.dense)


def linear_macs(batch: int, in_features: int, out_features: int) -> int:
    """Multiply-adds of ``x Wᵀ`` for ``batch`` rows."""
    return batch * in_features * out_features


def conv2d_macs(batch: int, out_hw: tuple[int, int], weight_shape) -> int:
    """Multiply-adds of a convolution with a weight of shape ``(C_out, C_in/groups, k_h, k_w)``."""
    c_out, c_in_per_group, kh, kw = weight_shape
    return batch * out_hw[0] * out_hw[1] * c_out * c_in_per_group * kh * kw


def model_training_cost(model: nn.Module) -> TrainingCost | None:
    """The sum of ``last_cost`` over the training layers of ``model`` (None if none has run a training step)."""
    costs = [m.last_cost for m in model.modules() if getattr(m, "last_cost", None) is not None]
    if not costs:
        return None
    total = costs[0]
    for cost in costs[1:]:
        total = total + cost
    return total
