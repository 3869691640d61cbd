"""What a speed figure was measured on: CPU model, SIMD flags, load, date and library versions.

Speed ratios move with the machine (the same dense C loop ran twice as fast on an AVX-512 core as on an AVX2 one),
so every speed benchmark writes this record beside its figures, and the documentation tables quote it.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

__all__ = ["machine_info", "machine_summary", "SIMD_FLAGS"]

#: The instruction-set flags that decide how fast dense and structured kernels run, in the order shown.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_fp16",
              "amx_tile", "neon", "asimd", "sve")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def machine_info() -> dict:
    """CPU model, SIMD flags, logical CPUs, 1/5/15-minute load averages, UTC date and versions (JSON-ready)."""
    import numpy

    model, flags = _cpuinfo()
    versions = {"python": platform.python_version(), "numpy": numpy.__version__}
    for name in ("torch", "numba", "onnxruntime"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = []
    return {"cpu": model, "simd": " ".join(f for f in SIMD_FLAGS if f in flags), "cpus": os.cpu_count(),
            "load": load, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "platform": platform.platform(), "versions": versions}


def machine_summary(info: dict | None = None) -> str:
    """One line for tables and logs: ``AMD EPYC (avx2 fma avx512f …), 2 CPUs, load 1.2/1.0/0.9, 2026-01-01 …``."""
    info = info or machine_info()
    load = "/".join(str(v) for v in info["load"]) or "unknown"
    return f"{info['cpu']} ({info['simd'] or 'no SIMD flags read'}), {info['cpus']} CPUs, load {load}, {info['date']}"
