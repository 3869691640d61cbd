"""Training-time approximate layers: cut the multiply-adds of training itself, not of a fitted trained weight.

An MLP (64-256-256-10) is trained on scikit-learn's handwritten digits three ways, each a drop-in conversion of the
same model: column-row sampled products (Adelman et al., NeurIPS 2021), SWAT top-K sparse weights and activations
(Raihan & Aamodt, NeurIPS 2020) and StrassenNets sum-product layers (Tschannen et al., ICML 2018), against exact
training. Each layer counts the multiply-adds of its last training step. The sum-product layers go through the
paper's three stages: full precision, ternary weights, then frozen ternary weights.

    python examples/training_layers.py            # 30 epochs each
    python examples/training_layers.py --fast     # 2 epochs each
"""

import sys

import torch
from sklearn.datasets import load_digits
from torch import nn

from structmat.training import (Stage, accuracy, convert_to_sampled, convert_to_sum_product, convert_to_topk_sparse,
                                format_training_report, train_epochs, train_staged, training_report)

EPOCHS = 2 if "--fast" in sys.argv else 30
torch.manual_seed(0)
digits = load_digits()
X = torch.tensor(digits.data / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target)
X_train, y_train, X_test, y_test = X[:1400], y[:1400], X[1400:], y[1400:]
mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))

variants = {
    "exact": mlp,
    "sampled, top-k 0.5": convert_to_sampled(mlp, 0.5, scheme="topk", mode="forward"),    # half the column-row pairs
    "SWAT 70 %": convert_to_topk_sparse(mlp, 0.7, topk_period=10),                         # top-30 % weights
    "sum-product r = out": convert_to_sum_product(mlp, 1.0, where=lambda name, m: name != "4"),  # head stays dense
}
for name, model in variants.items():
    if name.startswith("sum-product"):
        train_staged(model, X_train, y_train, [Stage("full_precision", EPOCHS, 3e-3), Stage("ternary", EPOCHS, 1e-3),
                                               Stage("frozen_ternary", EPOCHS, 3e-4)])
    else:
        train_epochs(model, X_train, y_train, epochs=EPOCHS, optimizer=torch.optim.Adam(model.parameters(), 1e-3))
    print(f"{name:22} test accuracy {accuracy(model, X_test, y_test):.3f}")
    if name != "exact":
        print(format_training_report(training_report(model)))
