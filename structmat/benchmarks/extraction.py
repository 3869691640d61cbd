"""Feature-extraction throughput: the whole cached extraction against the backbone's bare forward pass.

*Bare* runs ``backbone.model`` on batches that are already transformed and in memory, and keeps nothing.
*Cached* runs :func:`structmat.features.extract_features` into an empty directory: loading, transforms, the
forward pass with its hook, float conversion, checksums and atomic chunk writes. Both use the same images,
batch size and threads. Each round times one of each, in alternating order (bare first, then cached first, ...),
so that a slow spell of a shared machine hits both alike; a round's ratio is ``bare seconds / cached seconds``
(the cached throughput as a share of the bare one), and the summary is the median over rounds, from wall-clock
time and from this process's CPU time (which other processes on a busy machine do not inflate).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from structmat.benchmarks.results import write_rows

__all__ = ["run_extraction_benchmark", "EXTRACTION_COLUMNS"]

logger = logging.getLogger(__name__)

EXTRACTION_COLUMNS = ["backbone", "dataset", "images", "image_size", "batch_size", "chunk_size", "dtype", "threads",
                      "round", "mode", "seconds", "cpu_seconds", "images_per_second", "ratio_to_bare",
                      "cpu_ratio_to_bare"]


def _clock():
    return time.perf_counter(), time.process_time()


def _bare(backbone, batches) -> tuple[float, float]:
    model = backbone.model
    wall, cpu = _clock()
    with torch.inference_mode():
        for images in batches:
            if backbone.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            model(images)
    return time.perf_counter() - wall, time.process_time() - cpu


def _cached(backbone, dataset, target, **options) -> tuple[float, float]:
    from structmat.features.extract import extract_features

    wall, cpu = _clock()
    extract_features(backbone, dataset, target, progress=False, **options)
    return time.perf_counter() - wall, time.process_time() - cpu


def run_extraction_benchmark(backbone, dataset, *, batch_size: int = 16, chunk_size: int = 1024,
                             dtype: str = "float32", repeats: int = 5, csv_path=None, workdir=None) -> list[dict]:
    """Time bare forward passes and cached extraction of ``dataset`` in alternation; return the CSV rows.

    One row per timed run, with the round's ratios on the cached row, then a ``round="median"`` row holding
    the median ratios and the median cached throughput.
    """
    collate = backbone.transform.collate
    batches = [collate([dataset[j] for j in range(i, min(i + batch_size, len(dataset)))])[0]
               for i in range(0, len(dataset), batch_size)]
    _bare(backbone, batches[:2])  # warm-up: one-off allocations and kernel choices
    common = {"backbone": backbone.name, "dataset": getattr(dataset, "name", ""), "images": len(dataset),
              "image_size": backbone.transform.image_size, "batch_size": batch_size, "chunk_size": chunk_size,
              "dtype": dtype, "threads": torch.get_num_threads()}
    rows, ratios, cpu_ratios, rates = [], [], [], []
    with tempfile.TemporaryDirectory(dir=workdir, prefix="structmat-extract-bench-") as tmp:
        for round_ in range(repeats):
            timed = {}
            for mode in (("bare", "cached") if round_ % 2 == 0 else ("cached", "bare")):
                timed[mode] = (_bare(backbone, batches) if mode == "bare" else
                               _cached(backbone, dataset, Path(tmp) / f"round{round_}", dtype=dtype,
                                       chunk_size=chunk_size, batch_size=batch_size))
            ratios.append(timed["bare"][0] / timed["cached"][0])
            cpu_ratios.append(timed["bare"][1] / timed["cached"][1])
            rates.append(len(dataset) / timed["cached"][0])
            for mode in ("bare", "cached"):
                seconds, cpu = timed[mode]
                rows.append({**common, "round": round_, "mode": mode, "seconds": seconds, "cpu_seconds": cpu,
                             "images_per_second": len(dataset) / seconds,
                             **({"ratio_to_bare": ratios[-1], "cpu_ratio_to_bare": cpu_ratios[-1]}
                                if mode == "cached" else {})})
            logger.info("round %d: cached/bare throughput %.3f (wall), %.3f (CPU)", round_, ratios[-1], cpu_ratios[-1])
    rows.append({**common, "round": "median", "mode": "cached", "images_per_second": statistics.median(rates),
                 "ratio_to_bare": statistics.median(ratios), "cpu_ratio_to_bare": statistics.median(cpu_ratios)})
    if csv_path is not None:
        write_rows(csv_path, rows, EXTRACTION_COLUMNS)
    return rows
