"""Time structured products in C on one core, against the dense C loop and NumPy's BLAS.

Each family is fitted to EfficientNet-Lite0's classifier (1000×1280) at each budget, written as a float32 layer
file and timed by a small C99 driver (compiled once with `cc -O3 -march=native` and cached), pinned to one core;
every C output is checked against NumPy. Read the ratios, not the absolute times: the dense C and BLAS products
are timed again right after each structured one, so a busy machine affects both sides alike. Needs a C compiler.

    python examples/c_speed.py            # low rank and block sparse at 0.1, 0.25 and 0.5, 51 samples each
    python examples/c_speed.py --fast     # low rank at 0.25, 5 samples
"""

import sys
import tempfile

import numpy as np

import structmat
from structmat.speed_c import run_c_benchmark, time_c
from structmat.weights import load_weight

FAST = "--fast" in sys.argv
W = load_weight("efficientnet_lite0")                 # the 1000×1280 classifier, float64
families, budgets = (["lowrank"], [0.25]) if FAST else (["lowrank", "block_sparse"], [0.1, 0.25, 0.5])

with tempfile.TemporaryDirectory() as tmp:
    rows = run_c_benchmark({"classifier": W}, families, budgets, repeats=5 if FAST else 51,
                           csv_path=f"{tmp}/bench_c.csv")              # + the CSV that `structmat bench-c` writes
for row in rows:
    if row["family"] not in ("dense", "blas"):
        print(f"{row['family']:13} share {row['share']:.3f}: {row['median_ns'] / 1e3:7.1f} µs, "
              f"{row['ratio_to_c_dense']:.2f} × dense C, {row['ratio_to_blas_dense']:.2f} × BLAS")

M = structmat.approximate(W, "lowrank", 0.25)         # one matrix, one input: the bare timing call
result = time_c(M, np.random.default_rng(0).standard_normal(W.shape[1]), repeats=5)
print(f"time_c: median {result['median_ns'] / 1e3:.1f} µs per product, C output within "
      f"{result['relative_error']:.1e} of NumPy's")
