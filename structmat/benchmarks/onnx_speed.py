"""ONNX Runtime speed: each family's exported layer against the exported dense layer, one thread.

Every family is fitted to each matrix at the budget (``approximate``), turned into its layer (bias included) and
exported to ONNX (:func:`structmat.layers.export.export_onnx`); ``nn.Linear`` holding the same dense weight is
exported the same way. ONNX Runtime runs each file with one intra-op and one inter-op thread, sequential execution
and all graph optimisations, pinned to one core. Times are medians of the CPU time of the calling thread (with one
intra-op thread ONNX Runtime computes on the caller's thread). Each row also gives the numbers stored in the file
(initializers) against ``nparams``, and the file size.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat._json import dumps
from structmat._validation import check_weight
from structmat.benchmarks.machine import machine_info
from structmat.benchmarks.results import write_rows
from structmat.benchmarks.timing import time_repeats

__all__ = ["run_onnx_speed", "ONNX_SPEED_COLUMNS"]

logger = logging.getLogger(__name__)

ONNX_SPEED_COLUMNS = [
    "matrix", "m", "n", "family", "budget", "nparams", "share", "stored_numbers", "file_bytes", "batch", "ort_ms",
    "ratio_to_dense", "faster_than_dense", "max_relative_error", "cpu", "simd",
]


def _session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx_speed(matrices, families: Sequence[str], budget, *, batch_sizes=(1, 32), repeats: int = 50,
                   csv_path=None, workdir=None, progress: bool = False, cpu=None, seed: int = 0) -> list[dict]:
    """Time ONNX Runtime on each family's exported layer and on the exported dense layer.

    Parameters
    ----------
    matrices : mapping of name to array of shape (out_features, in_features)
    families : sequence of family names
    budget : int >= 1 or float in (0, 1]
    batch_sizes : sequence of int
    repeats : int
        Timed runs per cell (at least; more while a cell has run under 50 ms).
    workdir : path, optional
        Where the ONNX files go (default: a temporary directory, removed afterwards).

    Returns
    -------
    list of dict with the keys of ``ONNX_SPEED_COLUMNS``; ``ratio_to_dense`` is the family's time over the dense
    layer's at the same batch size. With ``csv_path``, ``onnx_speed.json`` beside it records the machine.
    """
    import torch

    from structmat.approximators import approximate
    from structmat.layers import layer_from_matrix
    from structmat.layers.export import export_onnx, onnx_initializer_count
    from structmat.speed_c import one_core

    machine = {"before": machine_info()}
    cpu_fields = {"cpu": machine["before"]["cpu"], "simd": machine["before"]["simd"]}
    rng = np.random.default_rng(seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, one_core(cpu) as pinned:
        folder = Path(workdir) if workdir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        jobs = [(name, f) for name in matrices for f in ["dense"] + [f for f in families if f != "dense"]]
        for name, family in tqdm(jobs, desc="onnx speed", disable=not progress):
            W = check_weight(matrices[name], name=f"matrix {name!r}")
            m, n = W.shape
            bias = rng.standard_normal(m).astype(np.float32) * 0.01
            if family == "dense":
                layer = torch.nn.Linear(n, m)
                with torch.no_grad():
                    layer.weight.copy_(torch.from_numpy(W.astype(np.float32)))
                    layer.bias.copy_(torch.from_numpy(bias))
                nparams = m * n
            else:
                try:
                    M = approximate(W, family, budget)
                except ValueError as exc:
                    logger.warning("onnx speed: skipping %s on %s: %s", family, name, exc)
                    continue
                layer = layer_from_matrix(M, bias)
                nparams = M.nparams
            path = folder / f"{name.replace(':', '_')}_{family}.onnx"
            export_onnx(layer, torch.zeros(2, n), path)
            session = _session(path)
            for batch in batch_sizes:
                x = rng.standard_normal((batch, n)).astype(np.float32)
                with torch.no_grad():
                    expected = layer(torch.from_numpy(x)).numpy()
                got = session.run(None, {"input_0": x})[0]
                error = float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30))
                timing = time_repeats(lambda: session.run(None, {"input_0": x}), repeats=repeats, warmup=3,
                                      min_seconds=0.05, clock=time.thread_time)
                rows.append({"matrix": name, "m": m, "n": n, "family": family,
                             "budget": budget if family != "dense" else 1.0, "nparams": nparams,
                             "share": nparams / (m * n), "stored_numbers": onnx_initializer_count(path),
                             "file_bytes": path.stat().st_size, "batch": batch, "ort_ms": 1e3 * timing.median,
                             "max_relative_error": error, **cpu_fields})
    reference = {(r["matrix"], r["batch"]): r["ort_ms"] for r in rows if r["family"] == "dense"}
    for r in rows:
        r["ratio_to_dense"] = r["ort_ms"] / reference[(r["matrix"], r["batch"])]
        r["faster_than_dense"] = bool(r["ratio_to_dense"] < 1.0) if r["family"] != "dense" else ""
    machine.update(after=machine_info(), pinned_cpu=pinned)
    if csv_path is not None:
        from structmat.matrices.io import atomic_write

        write_rows(csv_path, rows, ONNX_SPEED_COLUMNS)
        data = (dumps({"machine": machine, "rows": rows}, indent=2) + "\n").encode()
        atomic_write(Path(csv_path).with_suffix(".json"), lambda f: f.write(data))
    return rows
