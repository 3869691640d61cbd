r"""The StrassenNets training schedule: full precision, then ternary, then frozen ternary; optional distillation.

Tschannen et al. (ICML 2018, Sec. 4) train a sum-product network in three stages: with full-precision ``W_b``,
``W_c`` (stage 1); with ternary ``W_b``, ``W_c`` and straight-through gradients (stage 2); and with ``W_b``,
``W_c`` frozen at their ternary values while ``ã``, the batch normalisation and the other layers keep training
(stage 3). Switching to ternary costs accuracy, which stages 2 and 3 win back. Knowledge distillation from a
full-precision teacher (Hinton et al. 2015) helps most at small budgets:

.. math::

    L = (1 - \lambda)\,\mathrm{CE}(y, t) + \lambda\, T^2\,
        \mathrm{KL}\bigl(\mathrm{softmax}(z_{teacher}/T) \,\|\, \mathrm{softmax}(z/T)\bigr)

(the authors' code uses the soft-target cross-entropy, which differs from the KL term by the teacher's entropy,
a constant: the gradients are the same). Defaults :math:`\lambda = 0.5`, :math:`T = 1` as theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from structmat._validation import check_positive_int
from structmat.training.loop import train_epochs
from structmat.training.sum_product import STAGES, SumProductConv2d, SumProductLinear

__all__ = ["Stage", "set_sum_product_stage", "distillation_loss", "train_staged"]


@dataclass(frozen=True)
class Stage:
    """One stage of the schedule: its name (one of :data:`~structmat.training.sum_product.STAGES`), its number of
    epochs and its learning rate."""

    name: str
    epochs: int
    lr: float

    def __post_init__(self):
        if self.name not in STAGES:
            raise ValueError(f"stage name must be one of {STAGES}; got {self.name!r}")
        check_positive_int(self.epochs, "epochs", minimum=0)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr!r}")


def set_sum_product_stage(model: nn.Module, stage: str) -> int:
    """Put every sum-product layer of ``model`` in ``stage``; return how many there are.

    Raises
    ------
    ValueError
        an unknown stage, or a model without sum-product layers.
    """
    layers = [m for m in model.modules() if isinstance(m, (SumProductLinear, SumProductConv2d))]
    if not layers:
        raise ValueError("model has no SumProductLinear or SumProductConv2d layer")
    for layer in layers:
        layer.set_stage(stage)
    return len(layers)


def distillation_loss(logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor, *,
                      weight: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """``(1 - weight)·CE(logits, target) + weight·T²·KL(softmax(teacher/T) ‖ softmax(logits/T))``.

    >>> import torch
    >>> z = torch.tensor([[2.0, 0.0, -1.0]])
    >>> bool(torch.isclose(distillation_loss(z, torch.tensor([0]), z, weight=1.0), torch.tensor(0.0)))
    True
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1]; got {weight}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    hard = F.cross_entropy(logits, target)
    soft = F.kl_div(F.log_softmax(logits / temperature, -1), F.log_softmax(teacher_logits / temperature, -1),
                    reduction="batchmean", log_target=True)
    return (1.0 - weight) * hard + weight * temperature ** 2 * soft


def train_staged(model: nn.Module, X: torch.Tensor, y: torch.Tensor, stages: Sequence[Stage], *,
                 batch_size: int = 50, teacher: nn.Module | None = None, distill_weight: float = 0.5,
                 temperature: float = 1.0, weight_decay: float = 0.0,
                 evaluate: Callable[[nn.Module], dict] | None = None, seed: int = 0,
                 progress: bool = False) -> list[dict]:
    """Run the staged schedule on ``model``; return one row per stage (name, epochs, final loss, ``evaluate``'s).

    Each stage sets every sum-product layer to its stage and trains, with a fresh Adam optimiser over the
    parameters that still require gradients, for its epochs at its learning rate. With a ``teacher``, the loss
    is :func:`distillation_loss` against the teacher's logits (the teacher is put in evaluation mode).
    """
    rows = []
    if teacher is not None:
        teacher.eval()
    for number, stage in enumerate(stages):
        if not isinstance(stage, Stage):
            raise TypeError(f"stages must hold Stage objects; got {type(stage).__name__} {stage!r}")
        set_sum_product_stage(model, stage.name)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=stage.lr, weight_decay=weight_decay)
        loss_fn = None
        if teacher is not None:
            def loss_fn(model, xb, yb):
                with torch.no_grad():
                    teacher_logits = teacher(xb)
                return distillation_loss(model(xb), yb, teacher_logits, weight=distill_weight,
                                         temperature=temperature)
        loss = (train_epochs(model, X, y, epochs=stage.epochs, optimizer=optimizer, batch_size=batch_size,
                             loss_fn=loss_fn, seed=seed + number, progress=progress, desc=stage.name)
                if stage.epochs else float("nan"))
        row = {"stage": stage.name, "epochs": stage.epochs, "loss": loss}
        if evaluate is not None:
            row.update(evaluate(model))
        rows.append(row)
    return rows
