"""Replace the ``nn.Linear`` / ``nn.Conv2d`` modules of a model by training-time approximate layers, and report.

Like :func:`structmat.layers.replace_linear` (and ``torch.ao.quantization.convert``): the model is deep-copied
unless ``inplace``, ``where`` selects layers by qualified name (a glob) or by a predicate, only modules whose type
is exactly ``nn.Linear`` / ``nn.Conv2d`` are replaced, and :func:`training_report` lists the new layers.
"""

from __future__ import annotations

import copy
import logging
import numbers
from dataclasses import dataclass
from typing import Callable

from torch import nn
from tqdm.auto import tqdm

from structmat.layers.replace import _selector
from structmat.training.allocation import allocate_densities, check_sparsity
from structmat.training.cost import TrainingCost
from structmat.training.sampled import SampledConv2d, SampledLinear
from structmat.training.sum_product import SumProductConv2d, SumProductLinear
from structmat.training.topk_sparse import TopKSparseConv2d, TopKSparseLinear

__all__ = ["convert_to_sampled", "convert_to_topk_sparse", "convert_to_sum_product", "training_report",
           "format_training_report", "TrainingLayerReport"]

logger = logging.getLogger(__name__)

_LAYER_TYPES = {"linear": nn.Linear, "conv2d": nn.Conv2d}


def _chosen(model: nn.Module, where, layer_types) -> list[tuple[str, nn.Module]]:
    if isinstance(layer_types, str):
        layer_types = (layer_types,)
    unknown = [t for t in layer_types if t not in _LAYER_TYPES]
    if unknown or not layer_types:
        raise ValueError(f"layer_types must be a non-empty subset of {tuple(_LAYER_TYPES)}; got {layer_types!r}")
    types = tuple(_LAYER_TYPES[t] for t in layer_types)
    select = _selector(where)
    candidates = [(name, m) for name, m in model.named_modules() if type(m) in types]
    chosen = [(name, m) for name, m in candidates if select(name, m)]
    if not chosen:
        raise ValueError(f"where={where!r} selects no module of types {layer_types}; the model's candidates are "
                         f"{[name for name, _ in candidates]}")
    return chosen


def _replace(model: nn.Module, chosen, build: Callable[[int, str, nn.Module], nn.Module], label: str,
             progress: bool) -> None:
    for index, (name, module) in enumerate(tqdm(chosen, desc=label, disable=not progress)):
        try:
            new = build(index, name, module)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"layer {name!r} ({module}): {exc}") from exc
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, new)
    logger.info("%s:\n%s", label, format_training_report(training_report(model)))


def _prepare(model, inplace):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    return model if inplace else copy.deepcopy(model)


def convert_to_sampled(model: nn.Module, sample_ratio: float, *, where=None, layer_types=("linear", "conv2d"),
                       seed: int = 0, inplace: bool = False, progress: bool = False, **options) -> nn.Module:
    """Replace layers by :class:`SampledLinear` / :class:`SampledConv2d` (column-row sampling, Adelman et al.).

    ``options`` go to the layers (``minimal_k``, ``scheme``, ``mode``, ...). Layer ``i`` of the selection gets
    the seed ``seed + i``. Weights and biases are copied, so the converted model computes the same function in
    evaluation mode.
    """
    model = _prepare(model, inplace)

    def build(index, name, module):
        cls = SampledLinear if isinstance(module, nn.Linear) else SampledConv2d
        factory = cls.from_linear if isinstance(module, nn.Linear) else cls.from_conv2d
        return factory(module, sample_ratio=sample_ratio, seed=seed + index, **options)

    _replace(model, _chosen(model, where, layer_types), build, "convert_to_sampled", progress)
    return model


def convert_to_topk_sparse(model: nn.Module, sparsity: float, *, distribution: str = "uniform", where=None,
                           layer_types=("linear", "conv2d"), inplace: bool = False, progress: bool = False,
                           **options) -> nn.Module:
    """Replace layers by :class:`TopKSparseLinear` / :class:`TopKSparseConv2d` (SWAT, Raihan & Aamodt).

    ``sparsity`` is the share of the selected layers' weights removed in total, split across them by
    ``distribution``: ``"uniform"`` (every layer the same) or ``"erk"`` (Erdős–Rényi-kernel, see
    :mod:`structmat.training.allocation`). Each layer's activation sparsity is its weight sparsity unless
    ``activation_sparsity`` is passed. Other ``options`` (``topk_period``, ``structure``) go to the layers.
    """
    check_sparsity(sparsity)
    model = _prepare(model, inplace)
    chosen = _chosen(model, where, layer_types)
    densities = allocate_densities([tuple(m.weight.shape) for _, m in chosen], sparsity, distribution)

    def build(index, name, module):
        layer_sparsity = min(max(1.0 - densities[index], 0.0), 1.0 - 1e-12)
        if isinstance(module, nn.Linear):
            return TopKSparseLinear.from_linear(module, sparsity=layer_sparsity, **options)
        return TopKSparseConv2d.from_conv2d(module, sparsity=layer_sparsity, **options)

    _replace(model, chosen, build, "convert_to_topk_sparse", progress)
    return model


def _budget(num_multiplications, outputs: int) -> int:
    if isinstance(num_multiplications, bool) or not isinstance(num_multiplications, numbers.Real):
        raise TypeError("num_multiplications must be an int >= 1 (per layer) or a float > 0 (times the layer's "
                        f"outputs); got {type(num_multiplications).__name__} {num_multiplications!r}")
    if isinstance(num_multiplications, numbers.Integral):
        if num_multiplications < 1:
            raise ValueError(f"num_multiplications must be an int >= 1 or a float > 0; got {num_multiplications}")
        return int(num_multiplications)
    if not num_multiplications > 0:
        raise ValueError(f"num_multiplications must be an int >= 1 or a float > 0; got {num_multiplications}")
    return max(1, round(num_multiplications * outputs))


def convert_to_sum_product(model: nn.Module, num_multiplications, *, out_patch=1, init: str = "random",
                           batchnorm: bool = True, where=None, layer_types=("linear", "conv2d"),
                           inplace: bool = False, progress: bool = False) -> nn.Module:
    """Replace layers by :class:`SumProductLinear` / :class:`SumProductConv2d` (StrassenNets).

    Parameters
    ----------
    num_multiplications : int >= 1 or float > 0
        ``r`` per layer: an absolute count, or a multiple of the layer's output features / channels (the paper's
        ``r = c_out`` is ``1.0``).
    out_patch : int
        ``p`` of the convolutions.
    init : {"random", "svd"}
        Train from scratch as the paper does (the bias is still copied), or start from the truncated SVD of the
        trained weight (structmat's warm start; convolutions need ``out_patch=1``).
    batchnorm : bool
        Batch normalisation inside the layers (the paper's choice; an SVD start is exact only without it).
    """
    if init not in ("random", "svd"):
        raise ValueError(f"init must be 'random' or 'svd'; got {init!r}")
    model = _prepare(model, inplace)

    def build(index, name, module):
        if isinstance(module, nn.Linear):
            r = _budget(num_multiplications, module.out_features)
            if init == "svd":
                return SumProductLinear.from_linear(module, r, batchnorm=batchnorm)
            layer = SumProductLinear(module.in_features, module.out_features, module.bias is not None,
                                     num_multiplications=r, batchnorm=batchnorm, device=module.weight.device,
                                     dtype=module.weight.dtype)
        else:
            r = _budget(num_multiplications, module.out_channels)
            if init == "svd":
                if out_patch != 1:
                    raise ValueError(f"init='svd' needs out_patch=1; got {out_patch}")
                return SumProductConv2d.from_conv2d(module, r, batchnorm=batchnorm)
            if module.groups != 1 or module.dilation != (1, 1) or isinstance(module.padding, str) \
                    or module.padding_mode != "zeros":
                raise ValueError("SumProductConv2d replaces convolutions with groups=1, dilation=1 and integer "
                                 "zero padding")
            layer = SumProductConv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                                     module.padding, module.bias is not None, num_multiplications=r,
                                     out_patch=out_patch, batchnorm=batchnorm, device=module.weight.device,
                                     dtype=module.weight.dtype)
        if module.bias is not None:
            layer.bias.data.copy_(module.bias.detach())
        return layer

    _replace(model, _chosen(model, where, layer_types), build, "convert_to_sum_product", progress)
    return model


# ------------------------------------------------------------------------------------------------ report
@dataclass(frozen=True)
class TrainingLayerReport:
    """One training-time layer of a model. Fields a method does not have are None.

    ``training_cost`` is the multiply-add count of the layer's last training step (sampled and top-K sparse
    layers); ``multiplications``, ``additions`` and ``dense_multiplications`` are per example for the deployed
    sum-product form (convolutions at the last input size).
    """

    name: str
    method: str
    shape: tuple
    dense_nparams: int
    nparams: int
    weight_density: float | None = None
    activation_density: float | None = None
    training_cost: TrainingCost | None = None
    multiplications: int | None = None
    dense_multiplications: int | None = None
    additions: int | None = None

    @property
    def training_flop_reduction(self) -> float | None:
        return None if self.training_cost is None else self.training_cost.reduction


def _report_row(name: str, module: nn.Module) -> TrainingLayerReport | None:
    if isinstance(module, (SampledLinear, SampledConv2d)):
        return TrainingLayerReport(name, "sampled", tuple(module.weight.shape), module.weight.numel(),
                                   module.nparams, training_cost=module.last_cost)
    if isinstance(module, (TopKSparseLinear, TopKSparseConv2d)):
        return TrainingLayerReport(name, "topk_sparse", tuple(module.weight.shape), module.dense_nparams,
                                   module.nparams, weight_density=module.last_weight_density,
                                   activation_density=module.last_activation_density,
                                   training_cost=module.last_cost)
    if isinstance(module, SumProductLinear):
        shape = (module.out_features, module.in_features)
    elif isinstance(module, SumProductConv2d):
        shape = (module.out_channels, module.in_channels, *module.kernel_size)
    else:
        return None
    dense = 1
    for side in shape:
        dense *= side
    return TrainingLayerReport(name, "sum_product", shape, dense, module.nparams,
                               multiplications=module.multiplications, additions=module.additions,
                               dense_multiplications=module.dense_multiplications)


def training_report(model: nn.Module) -> list[TrainingLayerReport]:
    """The training-time layers of ``model`` with parameters, densities, training cost and multiplications."""
    return [row for name, module in model.named_modules() if (row := _report_row(name, module)) is not None]


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def format_training_report(rows: list[TrainingLayerReport]) -> str:
    """A plain-text table of :func:`training_report` with a total line; columns no layer fills are left out."""
    columns = [("layer", 24, lambda r: r.name), ("method", 12, lambda r: r.method),
               ("shape", 14, lambda r: "x".join(map(str, r.shape))), ("dense", 9, lambda r: str(r.dense_nparams)),
               ("nparams", 9, lambda r: str(r.nparams))]
    optional = [("w.density", 9, "weight_density", ".3f"), ("a.density", 9, "activation_density", ".3f"),
                ("train-FLOP cut", 14, "training_flop_reduction", ".1%"), ("mults", 10, "multiplications", "d"),
                ("dense mults", 11, "dense_multiplications", "d"), ("adds", 10, "additions", "d")]
    for title, width, field, spec in optional:
        if any(getattr(r, field) is not None for r in rows):
            columns.append((title, width, lambda r, f=field, s=spec: _fmt(getattr(r, f), s)))
    lines = [" ".join(f"{title:>{width}}" if i > 1 else f"{title:<{width}}"
                      for i, (title, width, _) in enumerate(columns))]
    for row in rows:
        lines.append(" ".join(f"{get(row):>{width}}" if i > 1 else f"{get(row):<{width}}"
                              for i, (_, width, get) in enumerate(columns)))
    if rows:
        costs = [r.training_cost for r in rows if r.training_cost is not None]
        total = f"total {sum(r.dense_nparams for r in rows)} -> {sum(r.nparams for r in rows)} weights"
        if costs:
            cost = costs[0]
            for c in costs[1:]:
                cost = cost + c
            total += f"; training multiply-adds cut by {cost.reduction:.1%} in the last step"
        mults = [r.multiplications for r in rows]
        if all(m is not None for m in mults) and all(r.dense_multiplications for r in rows):
            total += (f"; {sum(mults)} multiplications per example instead of "
                      f"{sum(r.dense_multiplications for r in rows)}")
        lines.append(total)
    return "\n".join(lines)
