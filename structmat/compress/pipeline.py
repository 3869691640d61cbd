"""``compress_model``: calibrate, fit curves, allocate one budget across layers and families, install the layers."""

from __future__ import annotations

import copy
import logging
import math
import numbers
import time

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from structmat.compress.allocation import AllocationError, allocate_global
from structmat.compress.calibration import collect_statistics
from structmat.compress.config import (ALLOCATIONS, CompressionConfig, candidate_families, check_family_options)
from structmat.compress.curves import LayerCurve, compute_curves, grid_budgets, options_key
from structmat.compress.latency import LATENCY_BATCHES, dense_latency_ms, layer_latency_ms
from structmat.compress.report import CompressionReport, LayerRow
from structmat.compress.selection import is_pointwise_conv, select_layers

__all__ = ["compress_model", "resolve_total_budget"]

logger = logging.getLogger(__name__)


def resolve_total_budget(budget, total: int, measure: str) -> int:
    """A share in (0, 1] of ``total`` (floored) or an int >= 1, as the number of parameters (or bytes) allowed."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise TypeError(f"budget must be an int >= 1 or a float in (0, 1]; got {type(budget).__name__} {budget!r}")
    if isinstance(budget, numbers.Integral):
        if budget < 1:
            raise ValueError(f"budget must be an int >= 1 or a float in (0, 1]; got {budget}")
        return int(budget)
    if not 0 < budget <= 1:
        raise ValueError(f"budget must be an int >= 1 or a float in (0, 1]; got {budget}")
    return int(math.floor(budget * total))


def _weight_matrix(module: nn.Module) -> np.ndarray:
    weight = module.weight.detach().cpu().double().numpy()
    return weight.reshape(weight.shape[0], -1)


def _output_energy(W: np.ndarray, stats) -> float:
    C = stats.second_moment
    return float(max(np.einsum("ij,ij->", W @ C, W), 0.0))


def _calibration_key(model: nn.Module, layers, calibration, row_mask) -> str | None:
    """A hash of everything the statistics depend on: the model's state, the selected layers, the calibration
    tensors and the row mask's name; None when an item holds something other than tensors and plain values."""
    import hashlib
    from collections.abc import Mapping

    import torch

    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    h.update(repr([name for name, _ in layers]).encode())
    h.update(repr(getattr(row_mask, "__qualname__", row_mask)).encode())

    def add(value) -> bool:
        if torch.is_tensor(value):
            value = value.detach().cpu().contiguous()
            h.update(f"{value.dtype}{tuple(value.shape)}".encode())
            h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
            return True
        if isinstance(value, Mapping):
            return all(add(k) and add(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
        if isinstance(value, (list, tuple)):
            return all(add(v) for v in value)
        if isinstance(value, (str, int, float, bool, type(None))):
            h.update(repr(value).encode())
            return True
        return False

    if not isinstance(calibration, (list, tuple)) or not all(add(item) for item in calibration):
        return None
    return h.hexdigest()[:24]


def _statistics(model, layers, calibration, config, cache_root, progress):
    """The layers' input statistics, read from the cache when the same model saw the same calibration data."""
    from structmat.statistics import InputStatistics

    key = _calibration_key(model, layers, calibration, config.row_mask)
    directory = cache_root / "statistics" / key if key else None
    if directory is not None and (directory / "done").exists():
        try:
            return {name: InputStatistics.load(directory / f"{i}.npz") for i, (name, _) in enumerate(layers)}
        except (OSError, ValueError) as exc:
            logger.info("cached calibration statistics unreadable (%s); calibrating again", exc)
    stats = collect_statistics(model, layers, calibration, row_mask=config.row_mask, progress=progress)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        for i, (name, _) in enumerate(layers):
            stats[name].save(directory / f"{i}.npz")
        (directory / "done").write_text("\n".join(name for name, _ in layers))
    return stats


def _first_tensor(output):
    """The tensor a model output is judged by: itself, ``last_hidden_state``/``logits``, or its first tensor."""
    import torch
    from collections.abc import Mapping

    if torch.is_tensor(output):
        return output
    for name in ("last_hidden_state", "logits"):
        if torch.is_tensor(getattr(output, name, None)):
            return getattr(output, name)
    values = output.values() if isinstance(output, Mapping) else output if isinstance(output, (list, tuple)) else []
    for value in values:
        if torch.is_tensor(value):
            return value
    raise TypeError(f"cannot find a tensor in the model's output ({type(output).__name__}) to measure sensitivity; "
                    "use weighting='output' or 'relative'")


def _sensitivities(model, layers, curves, plan, calibration, config, items: int = 2) -> list[float]:
    """Per layer: the model output's squared relative change when only that layer is replaced by a fit, divided by
    the layer's squared relative output error (an end-to-end amplification factor; see CompressionConfig)."""
    import torch

    from structmat.compress.calibration import call_model

    batches = list(calibration)[:items]
    with torch.inference_mode():
        reference = [_first_tensor(call_model(model, b)).float() for b in batches]
    masks = [config.row_mask(b) if config.row_mask is not None else None for b in batches]

    def change() -> float:
        num = den = 0.0
        with torch.inference_mode():
            for b, ref, mask in zip(batches, reference, masks):
                out = _first_tensor(call_model(model, b)).float()
                diff = out - ref
                if mask is not None and tuple(mask.shape) == tuple(ref.shape[:-1]):
                    diff, ref = diff[mask], ref[mask]
                num += float((diff ** 2).sum())
                den += float((ref ** 2).sum())
        return num / max(den, 1e-300)

    weights = []
    for (name, module), curve in zip(layers, curves):
        points = [p for p in _usable_points(curve, plan, False) if p["output_error"] > 1e-6]
        if not points:
            weights.append(1.0)
            continue
        share = config.sensitivity_share
        probe = min(points, key=lambda p: (abs(p["nparams"] / curve.dense_nparams - share), p["output_error"]))
        M = curve.matrix(probe["family"], plan[probe["family"]], probe["budget"])
        original = module.weight.data.clone()
        module.weight.data.copy_(torch.from_numpy(M.to_dense()).reshape(original.shape).to(original.dtype))
        try:
            weights.append(change() / probe["output_error"] ** 2)
        finally:
            module.weight.data.copy_(original)
    return weights


def _point_latency(curve: LayerCurve, row: dict, plan: dict, batch: int) -> float:
    """Measured latency (ms) of a point's layer at ``batch`` rows, cached in the curve."""
    key = f"latency_{batch}_ms"
    if row["family"] == "dense":
        info_key = f"dense_{key}"
        if curve.info.get(info_key) is None:
            curve.info[info_key] = dense_latency_ms(*curve.shape, batch)
            curve.save()
        return curve.info[info_key]
    if row.get(key) is None:
        from structmat.layers.base import layer_from_matrix

        M = curve.matrix(row["family"], plan[row["family"]], row["budget"])
        layer = layer_from_matrix(M, np.zeros(curve.shape[0]))
        row[key] = layer_latency_ms(layer, curve.shape[1], batch)
        curve.save()
    return row[key]


def _usable_points(curve: LayerCurve, plan: dict, keep_dense: bool) -> list[dict]:
    keys = {family: options_key(options) for family, options in plan.items()}
    points = [r for r in curve.kept_points() if keys.get(r["family"]) == r["options"]]
    if keep_dense:
        points.append(curve.dense_row())
    return points


def _allocate_global(curves, plan, keep_dense, weights, limit, config, progress):
    cost_key = "nparams" if config.measure == "params" else "nbytes"
    options, dropped = [], 0
    for curve in tqdm(curves, desc="latency", disable=not progress or config.max_slowdown is None, leave=False):
        points = _usable_points(curve, plan, keep_dense)
        if config.max_slowdown is not None:
            batch = config.latency_batch
            dense = _point_latency(curve, curve.dense_row(), plan, batch)
            fast = [p for p in points if p["family"] == "dense"
                    or _point_latency(curve, p, plan, batch) <= config.max_slowdown * dense]
            dropped += len(points) - len(fast)
            points = fast
        if not points:
            raise ValueError(f"layer {curve.name!r} has no usable point: every fit failed or was too slow, and the "
                             "dense layer is not a candidate; add 'dense' to families or relax max_slowdown")
        options.append(points)
    if dropped:
        logger.info("max_slowdown=%s: %d fitted points slower than dense at batch %d left out", config.max_slowdown,
                    dropped, config.latency_batch)
    costs = [[p[cost_key] for p in points] for points in options]
    losses = [[w * p["output_error"] ** 2 for p in points] for w, points in zip(weights, options)]
    try:
        choice = allocate_global(costs, losses, limit)
    except AllocationError as exc:
        hint = (f"; max_slowdown={config.max_slowdown} left out {dropped} fitted points slower than dense at batch "
                f"{config.latency_batch} (max_slowdown=None ignores speed)") if dropped else ""
        raise AllocationError(f"{exc}{hint}") from None
    return [points[i] for points, i in zip(options, choice)]


def _uniform_point(curve: LayerCurve, family: str, plan: dict, share: float, config, fit) -> dict | None:
    """The layer's fit of ``family`` at ``share`` of its parameters, or with ``measure="bytes"`` at most ``share`` of
    its dense bytes: the share of parameters is corrected by the bytes of the last fit, a few fits at most (the
    bytes per parameter of a family barely depend on the budget)."""
    def point(s):
        budgets = grid_budgets(curve.shape, [s], family, config.rank_multiple)
        if not budgets:
            return None
        fit([curve], {family: plan[family]}, [s])
        row = curve.rows.get((family, options_key(plan[family]), budgets[0]))
        return row if row is not None and row["status"] == "ok" else None

    if config.measure == "params":
        return point(share)
    target = share * curve.dense_row()["nbytes"]
    best, s = None, share
    for _ in range(5):
        row = point(s)
        if row is None:
            return best
        if row["nbytes"] <= target:
            best = row if best is None or row["nbytes"] > best["nbytes"] else best
            if row["nbytes"] >= 0.98 * target:
                return best
        s = min(0.999, s * target / row["nbytes"] * (0.995 if row["nbytes"] > target else 1.0))
    return best


def _allocate_uniform(curves, plan, share, weights, config, progress):
    families = [config.uniform_family] if config.uniform_family else list(plan)

    def fit(which, family_plan, shares):
        compute_curves(which, family_plan, shares, rank_multiple=config.rank_multiple,
                       time_limit=config.fit_time_limit, prune=False, progress=progress, jobs=config.jobs,
                       executor=config.executor)

    if config.measure == "params":  # every layer's fits in one grid (parallel when jobs > 1)
        fit(curves, {f: plan[f] for f in families}, [share])
    best = None
    for family in families:
        chosen = []
        for curve in curves:
            row = _uniform_point(curve, family, plan, share, config, fit)
            if row is None:
                break
            chosen.append(row)
        else:
            loss = sum(w * r["output_error"] ** 2 for w, r in zip(weights, chosen))
            if best is None or loss < best[0]:
                best = (loss, family, chosen)
    if best is None:
        raise ValueError(f"no family among {families} could be fitted to every layer at share {share:.4g} of its "
                         f"{config.measure}")
    logger.info("uniform allocation: family %s at share %.4g of each layer's %s", best[1], share, config.measure)
    return best[2]


def _install(model: nn.Module, name: str, module: nn.Module, curve: LayerCurve, row: dict, plan: dict, config):
    """Replace ``module`` by the structured layer of ``row``; return the new module (or the old one if dense)."""
    if row["family"] == "dense":
        return module
    M = curve.matrix(row["family"], plan[row["family"]], row["budget"], time_limit=config.fit_time_limit)
    return _install_matrix(model, name, module, row["family"], M, module.bias, row["frobenius_error"])


def _install_matrix(model: nn.Module, name: str, module: nn.Module, family: str, M, bias, frobenius_error: float):
    """Replace ``module`` by the ``family`` layer holding ``M`` and ``bias``; return the new module."""
    from structmat.families import get_family
    from structmat.layers.pointwise_conv import StructuredPointwiseConv2d

    layer = get_family(family).layer_class().from_matrix(M, bias, device=module.weight.device,
                                                         dtype=module.weight.dtype)
    layer.fit_error = frobenius_error
    new = StructuredPointwiseConv2d.from_conv2d(module, layer) if is_pointwise_conv(module) else layer
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
    return new


def _install_sequential(dense, model, layers, curves, chosen, plan, calibration, config, progress,
                        dense_statistics) -> list:
    """Install the chosen points group by group in call order, each refitted on the partly compressed model's
    inputs to the dense layer's outputs (:mod:`structmat.compress.sequential`); the report's rows."""
    import torch

    from structmat.compress.sequential import (asymmetric_error, bias_shift, call_groups, fit_target, layer_target,
                                               progress_bar, sequential_statistics)
    first = next(iter(calibration))
    groups = call_groups(model, layers, first)
    rows: list = [None] * len(layers)
    bar = progress_bar(len(layers), progress)
    for group in groups:
        names = [layers[i][0] for i in group]
        refit = [i for i in group if chosen[i]["family"] != "dense" or config.refit_dense]
        stats = sequential_statistics(dense, model, names, calibration, row_mask=config.row_mask,
                                      dense_statistics=dense_statistics[names[0]])[names[0]] if refit else None
        for i in group:
            (name, module), curve, row = layers[i], curves[i], chosen[i]
            if i not in refit:
                rows[i] = _report_row(name, module, module, curve, row, plan, config.measure_latency)
                bar.update()
                continue
            W = _weight_matrix(module)
            target = layer_target(W, stats, config.sequential_ridge)
            family = row["family"]
            if family == "dense":
                M = target
            else:
                M = fit_target(target, stats, family, int(row["nparams"]), plan[family], config.fit_time_limit)
                if M is None or M.nparams > row["nparams"] or M.nbytes > row["nbytes"]:
                    M = curve.matrix(family, plan[family], row["budget"], time_limit=config.fit_time_limit)
            dense_M = M if family == "dense" else M.to_dense()
            bias = module.bias
            if bias is not None:
                shift = torch.from_numpy(bias_shift(W, dense_M, stats)).to(bias.dtype)
                bias = bias.detach() + shift
            error = asymmetric_error(W, dense_M, stats)
            frobenius = float(np.linalg.norm(W - dense_M) / max(np.linalg.norm(W), 1e-300))
            updated = dict(row, output_error=error, frobenius_error=frobenius)
            if family == "dense":
                with torch.no_grad():
                    module.weight.copy_(torch.from_numpy(M).reshape(module.weight.shape).to(module.weight.dtype))
                    if bias is not None:
                        module.bias.copy_(bias)
                new = module
            else:
                updated.update(nparams=int(M.nparams), nbytes=int(M.nbytes))
                new = _install_matrix(model, name, module, family, M, bias, updated["frobenius_error"])
            rows[i] = _report_row(name, module, new, curve, updated, plan, config.measure_latency)
            bar.update()
    bar.close()
    return rows


def _report_row(name, module, new, curve: LayerCurve, row: dict, plan, measure_latency: bool) -> LayerRow:
    m, n = curve.shape
    latencies = {}
    if measure_latency:
        for batch in LATENCY_BATCHES:
            latencies[f"dense_latency_{batch}_ms"] = _point_latency(curve, curve.dense_row(), plan, batch)
            latencies[f"latency_{batch}_ms"] = _point_latency(curve, row, plan, batch)
    return LayerRow(name=name, kind="conv1x1" if is_pointwise_conv(module) else "linear", family=row["family"],
                    out_features=m, in_features=n, dense_nparams=m * n, nparams=int(row["nparams"]),
                    dense_nbytes=4 * m * n, nbytes=int(row["nbytes"]), output_error=float(row["output_error"]),
                    frobenius_error=float(row["frobenius_error"]), **latencies)


def compress_model(model: nn.Module, budget, calibration, *, families=None, where=None, allocation: str = "global",
                   config: CompressionConfig | None = None, **settings):
    """Compress the selected layers of ``model`` under one total budget; return ``(compressed_model, report)``.

    Steps: forward hooks gather every selected layer's input statistics over ``calibration``; for each layer and
    candidate family, data-aware fits on a grid of budgets give output-error curves (cached on disk, so another
    budget is quick); the allocation picks one family and budget per layer (or keeps it dense) so that the summed
    weighted output error is smallest while the structured layers' total stays within ``budget``; the chosen
    layers replace the originals (a pointwise convolution keeps its interface).

    Parameters
    ----------
    model : nn.Module
        Deep-copied unless ``inplace=True``.
    budget : float in (0, 1] or int >= 1
        A share of the selected layers' total dense weights (parameters, or bytes with ``measure="bytes"``), or
        an absolute count. Biases are not counted.
    calibration : iterable
        Model inputs: a mapping item runs ``model(**item)``, a tuple or list ``model(*item)``, anything else
        ``model(item)`` (see :mod:`structmat.compress.calibration`, also for dropping padded rows with ``row_mask``).
    families : list of str, optional
        Candidate families; default every registered family, ``"dense"`` (keeping a layer) included.
    where : glob, list of globs, compiled regex or callable, optional
        Which ``nn.Linear`` / pointwise ``nn.Conv2d`` layers (see :mod:`structmat.compress.selection`).
    allocation : {"global", "uniform"}
        ``"global"`` as above; ``"uniform"`` gives every layer the same share with one family (the baseline).
    config : CompressionConfig, optional
    **settings
        Override fields of ``config`` (``measure="bytes"``, ``cache_dir=...``, ``max_slowdown=None``, ...).

    Returns
    -------
    (nn.Module, CompressionReport)

    Raises
    ------
    ValueError, TypeError
        bad settings, a ``where`` that selects nothing, misspelt family options (all before any fitting), or a
        budget below the cheapest choice.
    """
    start = time.perf_counter()
    config = (config or CompressionConfig()).replace(**settings).check()
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}; got {allocation!r}")
    names = candidate_families(families)
    keep_dense = "dense" in names
    plan = check_family_options(config.family_options, [f for f in names if f != "dense"])
    if allocation == "uniform":
        if config.uniform_family is not None and config.uniform_family not in plan:
            raise ValueError(f"uniform_family={config.uniform_family!r} is not a structured candidate family "
                             f"({list(plan)})")
    if not plan and not (allocation == "global" and keep_dense):
        raise ValueError(f"families {names} hold no structured family to compress with")
    dense = model
    if not config.inplace:
        model = copy.deepcopy(model)
    elif config.sequential:
        dense = copy.deepcopy(model)
    layers = select_layers(model, where)
    shapes = [_weight_matrix(module).shape for _, module in layers]
    per_param = 1 if config.measure == "params" else 4
    total = sum(m * n for m, n in shapes) * per_param
    limit = resolve_total_budget(budget, total, config.measure)
    progress = config.show_progress()
    seconds = {}

    cache_root = config.resolved_cache_dir()
    stats = _statistics(model, layers, calibration, config, cache_root, progress)
    seconds["calibration"] = time.perf_counter() - start
    curves, weights = [], []
    for name, module in layers:
        W = _weight_matrix(module)
        curves.append(LayerCurve.open(cache_root, name, W, stats[name]))
        weights.append(_output_energy(W, stats[name]) if config.weighting == "output" else 1.0)
    measured_sensitivity = allocation == "global" and config.weighting == "sensitivity"

    mark = time.perf_counter()
    if allocation == "global":
        compute_curves(curves, plan, config.grid, rank_multiple=config.rank_multiple,
                       screen_share=config.screen_share, screen_keep=config.screen_keep,
                       time_limit=config.fit_time_limit, progress=progress, jobs=config.jobs,
                       executor=config.executor)
        seconds["fits"] = time.perf_counter() - mark
        mark = time.perf_counter()
        if measured_sensitivity:
            weights = _sensitivities(model, layers, curves, plan, calibration, config)
        chosen = _allocate_global(curves, plan, keep_dense, weights, limit, config, progress)
    else:
        share = float(budget) if isinstance(budget, float) else limit / total
        if share >= 1:
            raise ValueError(f"budget {budget} leaves every layer dense; nothing to compress")
        chosen = _allocate_uniform(curves, plan, share, weights, config, progress)
        seconds["fits"] = time.perf_counter() - mark
        mark = time.perf_counter()
    seconds["allocation"] = time.perf_counter() - mark

    mark = time.perf_counter()
    if config.sequential:
        rows = _install_sequential(dense, model, layers, curves, chosen, plan, calibration, config, progress,
                                   stats)
    else:
        rows = []
        for (name, module), curve, row in zip(layers, curves, chosen):
            new = _install(model, name, module, curve, row, plan, config)
            rows.append(_report_row(name, module, new, curve, row, plan, config.measure_latency))
    seconds["install_and_latency"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - start
    report = CompressionReport(layers=rows, budget=budget, measure=config.measure, allocation=allocation,
                               seconds=seconds,
                               settings={"families": names, "where": repr(where), "limit": limit, "total": total,
                                         "grid": list(config.grid), "weighting": config.weighting,
                                         "weights": [float(w) for w in weights],
                                         "screen_share": config.screen_share, "screen_keep": config.screen_keep,
                                         "max_slowdown": config.max_slowdown, "latency_batch": config.latency_batch,
                                         "rank_multiple": config.rank_multiple,
                                         "sequential": config.sequential, "refit_dense": config.refit_dense,
                                         "family_options": config.family_options, "cache_dir": str(cache_root)})
    logger.info("compress_model:\n%s", report.to_text())
    return model, report
