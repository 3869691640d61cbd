"""Benchmarks: error sweeps, layer speed and randomized-SVD speed, each writing CSV (and plots).

Run them from the CLI (``structmat sweep``, ``structmat bench-layers``, ``structmat bench-rsvd``) or from Python.
Speed targets live here, not in unit tests; quote medians and ratios measured in one run.
"""

from structmat.benchmarks.layer_speed import plot_layer_speed, run_layer_speed
from structmat.benchmarks.rsvd import run_rsvd_benchmark
from structmat.benchmarks.sweep import Variant, plot_sweep, run_sweep

__all__ = ["Variant", "run_sweep", "plot_sweep", "run_layer_speed", "plot_layer_speed", "run_rsvd_benchmark"]
