"""Run the C driver on one core: dense and structured products of the same W, checked against NumPy.

:func:`time_c` writes one matrix as a layer file, runs the compiled driver (warm-up, then timed repeats with
a monotonic clock) and checks its output against a float64 NumPy product of the same float32 numbers (relative
error below 1e-4). :func:`run_c_benchmark` does that for the dense W, each family at each budget, and times
NumPy's ``W @ x`` with one BLAS thread beside them, so a row shows both the fair ratio (structured C / dense C,
same loops, same compiler) and the real-world one (structured C / optimized BLAS). The process is pinned to
one core while it measures, where the OS allows (``os.sched_setaffinity``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat.matrices.base import StructuredMatrix
from structmat.matrices.dense import Dense
from structmat.speed_c.build import compile_driver
from structmat.speed_c.layer_format import LayerFileError, write_input, write_layer

__all__ = [
    "C_BENCH_COLUMNS", "OutputMismatchError", "TOLERANCE", "one_core", "run_driver", "time_c", "run_c_benchmark",
    "write_json",
]

logger = logging.getLogger(__name__)

#: Relative error allowed between the C output (float32) and NumPy's float64 product of the same numbers.
TOLERANCE = 1e-4

C_BENCH_COLUMNS = [
    "matrix", "m", "n", "family", "implementation", "budget", "nparams", "share", "byte_share", "median_ns",
    "min_ns", "max_ns", "repeats", "dense_c_ns", "dense_blas_ns", "ratio_to_c_dense", "ratio_to_blas_dense",
    "ratio_over_share", "within_target", "relative_error", "checksum", "cpu", "simd",
]

#: A structured C product should cost at most this multiple of ``share × dense C time``.
TARGET_FACTOR = 1.5
#: Families whose target is measured against the byte share (values + int32 indices), not the parameter share:
#: an unstructured sparse product reads an index per value (issue 8).
BYTE_SHARE_FAMILIES = ("sparse", "sparse_product")


class OutputMismatchError(RuntimeError):
    """The C kernel's output differs from NumPy's product by more than :data:`TOLERANCE`."""


@contextlib.contextmanager
def one_core(cpu=None):
    """Pin this process (and the children it starts) to one CPU; yields the CPU, or None where unsupported.

    ``cpu`` defaults to the highest-numbered CPU the process may use. The previous affinity is restored on exit.
    """
    if not hasattr(os, "sched_setaffinity"):
        logger.info("speed_c: this OS does not let a process pin itself to a core; timing unpinned")
        yield None
        return
    allowed = os.sched_getaffinity(0)
    if cpu is None:
        cpu = max(allowed)
    elif cpu not in allowed:
        raise ValueError(f"cpu must be one of the CPUs this process may use, {sorted(allowed)}; got {cpu}")
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, allowed)


def run_driver(binary, layer_path, input_path, *, warmup: int = 10, repeats: int = 51,
               min_sample_ns: int = 20_000, output_path=None, timeout: float | None = 600) -> dict:
    """Run the compiled driver once and return its JSON result (``median_ns``, ``min_ns``, ``checksum``, ...).

    Raises
    ------
    LayerFileError
        the driver rejected the layer or input file (its one-line message).
    RuntimeError
        the driver failed otherwise (crash, timeout).
    """
    argv = [str(binary), str(layer_path), str(input_path), "--warmup", str(int(warmup)), "--repeats",
            str(int(repeats)), "--min-sample-ns", str(int(min_sample_ns))]
    if output_path is not None:
        argv += ["--output", str(output_path)]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"the C driver did not finish within {timeout} s on {layer_path}") from exc
    message = result.stderr.strip().splitlines()
    message = message[-1] if message else ""
    if result.returncode == 2:
        raise LayerFileError(message.removeprefix("structmat-bench: error: "))
    if result.returncode != 0:
        raise RuntimeError(f"the C driver failed on {layer_path} with exit status {result.returncode}: {message}")
    return json.loads(result.stdout)


def _reference(M: StructuredMatrix, x32: np.ndarray, bias) -> np.ndarray:
    """NumPy's product of the numbers the C kernel sees: float32 data, float64 arithmetic."""
    M32 = M.astype(np.float32).astype(np.float64)
    y = M32 @ x32.astype(np.float64)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float32).astype(np.float64)
    return y


def time_c(M: StructuredMatrix, x, *, bias=None, binary=None, work_dir=None, warmup: int = 10, repeats: int = 51,
           min_sample_ns: int = 20_000, name: str = "layer") -> dict:
    """Time ``M @ x (+ bias)`` in C and check the output against NumPy.

    Parameters
    ----------
    M : StructuredMatrix
        A matrix whose family has a C kernel; written in float32.
    x : array of shape (n,)
    binary : path, optional
        A compiled driver (default: :func:`~structmat.speed_c.build.compile_driver` with default settings).
    work_dir : path, optional
        Where the layer, input and output files go (default: a temporary directory).

    Returns
    -------
    dict
        The driver's result plus ``relative_error`` and ``output`` (the C output, float32).

    Raises
    ------
    ValueError
        ``x`` does not have shape ``(n,)``.
    OutputMismatchError
        the C output differs from NumPy's by more than :data:`TOLERANCE`.
    """
    m, n = M.shape
    x32 = np.asarray(x, dtype=np.float32)
    if x32.shape != (n,):
        raise ValueError(f"x must have shape ({n},) for a matrix of shape {M.shape}; got {x32.shape}")
    if binary is None:
        binary = compile_driver()
    with contextlib.ExitStack() as stack:
        work = Path(work_dir) if work_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        layer_path = write_layer(M, work / f"{name}.smlayer", bias=bias)
        input_path = write_input(x32, work / f"{name}.input.f32")
        output_path = work / f"{name}.output.f32"
        result = run_driver(binary, layer_path, input_path, warmup=warmup, repeats=repeats,
                            min_sample_ns=min_sample_ns, output_path=output_path)
        y = np.fromfile(output_path, dtype="<f4")
    if y.shape != (m,):
        raise RuntimeError(f"the C driver wrote {y.shape[0]} outputs for {name}; expected {m}")
    ref = _reference(M, x32, bias)
    scale = np.linalg.norm(ref)
    error = float(np.linalg.norm(y - ref) / scale) if scale > 0 else float(np.linalg.norm(y))
    if not error < TOLERANCE:
        raise OutputMismatchError(
            f"C output of {M.family} ({name}, shape {M.shape}) differs from NumPy's: relative error {error:.3g} "
            f">= {TOLERANCE:g}"
        )
    return {**result, "relative_error": error, "output": y}


def _time_blas(W32: np.ndarray, x32: np.ndarray, warmup: int, repeats: int):
    from structmat.benchmarks.timing import single_thread, time_repeats

    with single_thread():
        return time_repeats(lambda: W32 @ x32, repeats=repeats, warmup=warmup, min_seconds=0.05)


def _row(name, M, implementation, budget, result, dense_m_n):
    from structmat.benchmarks.machine import machine_info

    m, n = dense_m_n
    machine = _MACHINE.get("info") or _MACHINE.setdefault("info", machine_info())
    return {"cpu": machine["cpu"], "simd": machine["simd"],
            "matrix": name, "m": m, "n": n, "family": M.family if M is not None else "dense",
            "implementation": implementation, "budget": budget,
            "nparams": M.nparams if M is not None else m * n,
            "share": (M.nparams if M is not None else m * n) / (m * n),
            "byte_share": (M.nbytes if M is not None else 4 * m * n) / (4 * m * n), **result}


#: The machine record of this process (read once: the CPU model and SIMD flags beside every row).
_MACHINE: dict = {}


def _add_ratios(rows: list[dict]) -> list[dict]:
    """Ratios to the dense references timed right after each structured cell (``dense_c_ns``,
    ``dense_blas_ns``), or to the matrix's first dense timings for the dense rows themselves."""
    c_dense = {r["matrix"]: r["median_ns"] for r in rows if r["family"] == "dense" and r["implementation"] == "c"}
    blas = {r["matrix"]: r["median_ns"] for r in rows if r["implementation"] == "numpy-blas"}
    for r in rows:
        r.setdefault("dense_c_ns", c_dense.get(r["matrix"], ""))
        r.setdefault("dense_blas_ns", blas.get(r["matrix"], ""))
        ref_c, ref_blas = r["dense_c_ns"], r["dense_blas_ns"]
        r["ratio_to_c_dense"] = r["median_ns"] / ref_c if ref_c else ""
        r["ratio_to_blas_dense"] = r["median_ns"] / ref_blas if ref_blas else ""
        if ref_c and r["implementation"] == "c" and r["family"] != "dense":
            basis = r["byte_share"] if r["family"] in BYTE_SHARE_FAMILIES else r["share"]
            r["ratio_over_share"] = r["ratio_to_c_dense"] / basis
            r["within_target"] = bool(r["ratio_over_share"] <= TARGET_FACTOR)
        else:
            r["ratio_over_share"] = r["within_target"] = ""
    return rows


def run_c_benchmark(matrices: Mapping[str, object], families: Sequence[str] = (), budgets: Sequence = (), *,
                    options: Mapping | None = None, bias: Mapping | None = None, warmup: int = 10,
                    repeats: int = 51, min_sample_ns: int = 20_000, compiler=None, flags=None, cache_dir=None,
                    cpu=None, seed: int = 0, work_dir=None, csv_path=None, json_path=None,
                    progress: bool = False) -> list[dict]:
    """Time the dense product and each family at each budget in C on one core, plus NumPy's BLAS dense product.

    Parameters
    ----------
    matrices : mapping of name to array of shape (m, n) or StructuredMatrix
        A dense array is fitted with every family at every budget (``structmat.approximate``, float64). A
        StructuredMatrix is timed as it is, against its own ``to_dense()``.
    families : sequence of str
        Families with a C kernel (see ``structmat.speed_c.writers.WRITERS``).
    budgets : sequence of int >= 1 or float in (0, 1]
    options : mapping of family name to dict of fit options, optional
    bias : mapping of matrix name to array of shape (m,), optional
        Added by the driver inside the timed product.
    warmup, repeats, min_sample_ns : int
        Driver settings: warm-up products, timed samples, and the shortest sample (several products are
        run per sample when one is faster).
    compiler, flags, cache_dir :
        Passed to :func:`~structmat.speed_c.build.compile_driver`.
    cpu : int, optional
        The CPU to pin to (default: the highest-numbered allowed one).
    csv_path, json_path : path, optional
        Rewritten (atomically) after every cell.

    Returns
    -------
    list of dict
        One row per (matrix, implementation) with the keys in :data:`C_BENCH_COLUMNS`: ``ratio_to_c_dense`` is the
        fair ratio, ``ratio_to_blas_dense`` the real-world one, and ``within_target`` says whether the structured
        time is at most ``1.5 × share`` of the dense C time (the byte share for :data:`BYTE_SHARE_FAMILIES`). The dense C and BLAS products are timed again right
        after each structured one (``dense_c_ns``, ``dense_blas_ns``) and the ratios use those adjacent times, so
        load that drifts during a long run (fits take minutes) does not skew them.
    """
    from structmat._validation import check_weight, resolve_budget
    from structmat.approximators import approximate
    from structmat.benchmarks.results import write_rows
    from structmat.speed_c.writers import WRITERS

    options = dict(options or {})
    bias = dict(bias or {})
    for family in families:
        if family not in WRITERS:
            raise ValueError(f"family {family!r} has no C kernel; families with one: {sorted(WRITERS)}")
    jobs = []
    for name, value in matrices.items():
        if isinstance(value, StructuredMatrix):
            jobs.append((name, value.to_dense(), [(value, "")]))
        else:
            W = check_weight(value, name=f"matrix {name!r}")
            for b in budgets:
                resolve_budget(b, W.shape)
            jobs.append((name, W, [(family, b) for family in families for b in budgets]))
    binary = compile_driver(compiler=compiler, flags=flags, cache_dir=cache_dir)
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    settings = dict(warmup=warmup, repeats=repeats, min_sample_ns=min_sample_ns)
    total = sum(2 + len(cells) for _, _, cells in jobs)
    with contextlib.ExitStack() as stack:
        work = Path(work_dir) if work_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        pinned = stack.enter_context(one_core(cpu))
        bar = stack.enter_context(tqdm(total=total, desc="C speed", disable=not progress))
        for name, W, cells in jobs:
            m, n = W.shape
            x = rng.standard_normal(n).astype(np.float32)
            b = bias.get(name)
            dense = Dense(W.astype(np.float32))
            result = time_c(dense, x, bias=b, binary=binary, work_dir=work, name="dense", **settings)
            rows.append(_row(name, None, "c", 1.0, _clean(result), (m, n)))
            bar.update()
            blas = _time_blas(dense.W, x, warmup, repeats)
            rows.append(_row(name, None, "numpy-blas", 1.0,
                             {"median_ns": 1e9 * blas.median, "min_ns": 1e9 * blas.minimum,
                              "max_ns": 1e9 * blas.maximum, "repeats": blas.repeats}, (m, n)))
            bar.update()
            dense_files = (work / "dense.smlayer", work / "dense.input.f32")
            for family, budget in cells:
                if isinstance(family, StructuredMatrix):
                    M = family
                else:
                    try:
                        M = approximate(W, family, budget, **options.get(family, {}))
                    except ValueError as exc:
                        logger.warning("speed_c: skipping %s at budget %s on %s: %s", family, budget, name, exc)
                        bar.update()
                        continue
                result = time_c(M, x, bias=b, binary=binary, work_dir=work, name=M.family, **settings)
                # the dense references again, right after: a shared machine's load drifts over a long run
                dense_again = run_driver(binary, *dense_files, **settings)["median_ns"]
                blas_again = 1e9 * _time_blas(dense.W, x, warmup, repeats).median
                rows.append(_row(name, M, "c", budget, {**_clean(result), "dense_c_ns": dense_again,
                                                        "dense_blas_ns": blas_again}, (m, n)))
                bar.update()
                _add_ratios(rows)
                if csv_path is not None:
                    write_rows(csv_path, rows, C_BENCH_COLUMNS)
                if json_path is not None:
                    write_json(json_path, rows, binary=binary, cpu=pinned, settings=settings)
    _add_ratios(rows)
    if csv_path is not None:
        write_rows(csv_path, rows, C_BENCH_COLUMNS)
    if json_path is not None:
        write_json(json_path, rows, binary=binary, cpu=pinned, settings=settings)
    return rows


def _clean(result: dict) -> dict:
    keep = ("median_ns", "min_ns", "max_ns", "repeats", "relative_error", "checksum")
    return {k: result[k] for k in keep}


def write_json(path, rows: list[dict], *, binary, cpu, settings: dict) -> None:
    """Rows plus what produced them (build settings, pinned CPU, processor, BLAS), atomically (NaN as null)."""
    from structmat._json import dumps
    from structmat.matrices.io import atomic_write

    build = {}
    build_json = Path(binary).parent / "build.json"
    if build_json.exists():
        build = json.loads(build_json.read_text())
    try:
        from threadpoolctl import threadpool_info

        blas = [{k: i.get(k) for k in ("internal_api", "version", "architecture")} for i in threadpool_info()]
    except ImportError:  # threadpoolctl comes with scikit-learn; report nothing rather than fail
        blas = []
    from structmat.benchmarks.machine import machine_info

    machine = {"platform": platform.platform(), "processor": _processor_name(), "cpus": os.cpu_count()}
    machine.update(machine_info())  # CPU model, SIMD flags, load, date, versions
    document = {"rows": rows, "driver": str(binary), "build": build, "pinned_cpu": cpu, "settings": settings,
                "machine": machine, "numpy_blas": blas}
    data = (dumps(document, indent=2) + "\n").encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))


def _processor_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor()
