"""Feature-extraction throughput: the whole cached extraction against the backbone's bare forward pass.

*Bare* runs ``backbone.model`` on batches that are already transformed and in memory, and keeps nothing.
*Cached* runs :func:`structmat.features.extract_features` into an empty directory: loading, transforms, the
forward pass with its hook, float conversion, checksums and atomic chunk writes. Both use the same images,
batch size and threads, alternate over ``repeats`` rounds (so that a busy machine slows both alike), and the
median images per second of each gives ``ratio = cached / bare``.
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
                      "mode", "round", "seconds", "images_per_second", "median_images_per_second", "ratio_to_bare"]


def _bare_seconds(backbone, batches) -> float:
    model = backbone.model
    start = time.perf_counter()
    with torch.inference_mode():
        for images in batches:
            if backbone.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            model(images)
    return time.perf_counter() - start


def run_extraction_benchmark(backbone, dataset, *, batch_size: int = 16, chunk_size: int = 1024,
                             dtype: str = "float32", repeats: int = 3, csv_path=None, workdir=None) -> list[dict]:
    """Time bare forward passes and cached extraction of ``dataset`` in alternation; return the CSV rows.

    The last two rows are the medians (``round="median"``), the cached one with ``ratio_to_bare``.
    """
    from structmat.features.extract import extract_features

    collate = backbone.transform.collate
    batches = [collate([dataset[j] for j in range(i, min(i + batch_size, len(dataset)))])[0]
               for i in range(0, len(dataset), batch_size)]
    _bare_seconds(backbone, batches[:2])  # warm-up: one-off allocations and kernel choices
    common = {"backbone": backbone.name, "dataset": getattr(dataset, "name", ""), "images": len(dataset),
              "image_size": backbone.transform.image_size, "batch_size": batch_size, "chunk_size": chunk_size,
              "dtype": dtype, "threads": torch.get_num_threads()}
    rows, rates = [], {"bare": [], "cached": []}
    with tempfile.TemporaryDirectory(dir=workdir, prefix="structmat-extract-bench-") as tmp:
        for round_ in range(repeats):
            seconds = _bare_seconds(backbone, batches)
            rates["bare"].append(len(dataset) / seconds)
            rows.append({**common, "mode": "bare", "round": round_, "seconds": seconds,
                         "images_per_second": rates["bare"][-1]})
            target = Path(tmp) / f"round{round_}"
            start = time.perf_counter()
            extract_features(backbone, dataset, target, dtype=dtype, chunk_size=chunk_size, batch_size=batch_size,
                             progress=False)
            seconds = time.perf_counter() - start
            rates["cached"].append(len(dataset) / seconds)
            rows.append({**common, "mode": "cached", "round": round_, "seconds": seconds,
                         "images_per_second": rates["cached"][-1]})
            logger.info("round %d: bare %.1f img/s, cached %.1f img/s", round_, rates["bare"][-1], rates["cached"][-1])
    bare, cached = statistics.median(rates["bare"]), statistics.median(rates["cached"])
    rows.append({**common, "mode": "bare", "round": "median", "median_images_per_second": bare,
                 "ratio_to_bare": 1.0})
    rows.append({**common, "mode": "cached", "round": "median", "median_images_per_second": cached,
                 "ratio_to_bare": cached / bare})
    if csv_path is not None:
        write_rows(csv_path, rows, EXTRACTION_COLUMNS)
    return rows
