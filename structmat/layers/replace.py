"""Replace the ``nn.Linear`` modules of any model by structured layers fitted to their trained weights."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable

from torch import nn
from tqdm.auto import tqdm

from structmat.families import get_family
from structmat.layers.base import StructuredLinear

__all__ = ["replace_linear", "replacement_report", "format_report", "LayerReport"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerReport:
    """One structured layer of a model: its name, family, shape, weight counts and fit error."""

    name: str
    family: str
    in_features: int
    out_features: int
    dense_nparams: int
    nparams: int
    fit_error: float | None

    @property
    def share(self) -> float:
        return self.nparams / self.dense_nparams


def _selector(where) -> Callable[[str, nn.Module], bool]:
    """``where`` as a predicate: None, a glob, a list of globs, a compiled regex or a callable (the rules of
    :mod:`structmat.compress.selection`)."""
    from structmat.compress.selection import module_selector

    return module_selector(where)


def replace_linear(model: nn.Module, family: str, budget, *, where=None, inplace: bool = False,
                   progress: bool = False, **options) -> nn.Module:
    """Replace selected ``nn.Linear`` modules of ``model`` by ``family`` layers fitted to their weights.

    Parameters
    ----------
    model : nn.Module
    family : str
        A registered family name.
    budget : int >= 1 or float in (0, 1]
        Per layer: a share of that layer's ``in * out`` weights, or an absolute count.
    where : None, str, list of str, compiled regex or callable
        Which ``nn.Linear`` modules to replace: all (None), those whose whole qualified name matches a glob
        (``"classifier.*"``, ``"*.attention.*"``) or any glob of a list, those a compiled regex finds
        (``re.compile(r"query|key")``), or those for which ``where(name, module)`` is true.
    inplace : bool
        Modify ``model`` itself instead of a deep copy (like ``torch.ao.quantization.convert``).
    progress : bool
        Show a tqdm bar over the layers.
    **options
        Passed to the family's fit function.

    Returns
    -------
    nn.Module
        The model with structured layers; :func:`replacement_report` lists them with parameter counts before and
        after and the fit errors (also logged at INFO).

    Raises
    ------
    ValueError
        if ``where`` selects no ``nn.Linear``, or a layer's budget is below the family's smallest matrix (the
        message names the layer).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    layer_class = get_family(family).layer_class()
    select = _selector(where)
    if not inplace:
        model = copy.deepcopy(model)
    linears = [(name, module) for name, module in model.named_modules() if type(module) is nn.Linear]
    chosen = [(name, module) for name, module in linears if select(name, module)]
    if not chosen:
        structured = [n for n, m in model.named_modules() if isinstance(m, StructuredLinear)]
        done = f"; already structured: {structured}" if structured else ""
        raise ValueError(f"where={where!r} selects no nn.Linear module; the model's nn.Linear modules are "
                         f"{[n for n, _ in linears]}{done}")
    for name, module in tqdm(chosen, desc=f"replace_linear({family})", disable=not progress):
        try:
            new = layer_class.from_linear(module, budget, **options)
        except ValueError as exc:
            raise ValueError(f"layer {name!r} ({module.out_features}x{module.in_features}): {exc}") from exc
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, new)
    logger.info("replace_linear:\n%s", format_report(replacement_report(model)))
    return model


def replacement_report(model: nn.Module) -> list[LayerReport]:
    """The structured layers of ``model`` with their dense and structured weight counts and fit errors."""
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, StructuredLinear):
            rows.append(LayerReport(name, module.family, module.in_features, module.out_features,
                                    module.in_features * module.out_features, module.nparams, module.fit_error))
    return rows


def format_report(rows: list[LayerReport]) -> str:
    """A plain-text table of a replacement report with a total line; the name column fits the longest name."""
    width = max([len("layer"), len("total")] + [len(r.name) for r in rows])
    lines = [f"{'layer':<{width}} {'family':<14} {'shape':>12} {'dense':>10} {'structured':>11} {'share':>7} "
             f"{'fit error':>9}"]
    for r in rows:
        err = "" if r.fit_error is None else f"{r.fit_error:.4f}"
        lines.append(f"{r.name:<{width}} {r.family:<14} {f'{r.out_features}x{r.in_features}':>12} "
                     f"{r.dense_nparams:>10} {r.nparams:>11} {r.share:>7.1%} {err:>9}")
    dense, structured = sum(r.dense_nparams for r in rows), sum(r.nparams for r in rows)
    if rows:
        lines.append(f"{'total':<{width}} {'':<14} {'':>12} {dense:>10} {structured:>11} {structured / dense:>7.1%}")
    return "\n".join(lines)
