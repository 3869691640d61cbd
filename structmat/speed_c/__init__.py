"""Single-core C speed of structured products: a binary layer format, C99 kernels, and a compile-and-time runner.

>>> from structmat.speed_c import run_c_benchmark                                    # doctest: +SKIP
>>> rows = run_c_benchmark({"W": W}, ["lowrank"], [0.1, 0.25, 0.5], csv_path="c.csv")  # doctest: +SKIP

- :mod:`~structmat.speed_c.layer_format`: the file format (specified in its docstring) and ``write_layer``;
- :mod:`~structmat.speed_c.writers`: the per-family layouts, one ``CWriter`` entry per family;
- ``structmat_layer.h``, ``layer_io.c``, ``driver.c`` and one ``kernel_<family>.c`` per family (C99, libc and libm);
- :mod:`~structmat.speed_c.build`: compile once into a cache keyed by the sources, compiler and flags;
- :mod:`~structmat.speed_c.runner`: pin to one core, time C against NumPy's BLAS, check outputs, write CSV/JSON;
- :mod:`~structmat.speed_c.plot`: time against parameters with the ideal line ``t_dense × share``.

The C side computes in float32; fits stay in float64 and are cast when written.
"""

from structmat.speed_c.build import CompilerError, compile_driver, default_cache_dir
from structmat.speed_c.layer_format import LayerFileError, read_header, write_input, write_layer
from structmat.speed_c.plot import plot_c_benchmark
from structmat.speed_c.runner import (
    C_BENCH_COLUMNS, OutputMismatchError, one_core, run_c_benchmark, run_driver, time_c,
)
from structmat.speed_c.writers import WRITERS, CWriter, c_family_names

__all__ = [
    "CompilerError", "compile_driver", "default_cache_dir", "LayerFileError", "read_header", "write_input",
    "write_layer", "plot_c_benchmark", "C_BENCH_COLUMNS", "OutputMismatchError", "one_core", "run_c_benchmark",
    "run_driver", "time_c", "WRITERS", "CWriter", "c_family_names",
]
