"""Which layers of a model are compressed: the ``where`` rules, and the layers that are matrices.

A *candidate* is a module whose weight is a matrix acting on the last axis of its input:

- an ``nn.Linear`` (exactly that type; subclasses may change ``forward``);
- a pointwise convolution: an ``nn.Conv2d`` (or a subclass) with a 1×1 kernel and ``groups=1``. Its weight is an
  ``(out_channels, in_channels)`` matrix applied to every pixel. Whether a subclass's ``forward`` really is that
  convolution of its input is checked on the first calibration batch (see :mod:`structmat.compress.calibration`).

``where`` selects among the candidates by qualified name (as in ``model.named_modules()``):

``None``
    every candidate;
a ``str``
    a glob matched against the *whole* name with :func:`fnmatch.fnmatchcase` (``*`` also matches dots:
    ``"encoder.*"`` is everything under ``encoder``, ``"*.attention.*"`` every attention linear);
    a name without wildcards selects exactly that layer;
a list or tuple of globs
    a layer matched by any of them;
a compiled regular expression (``re.compile(...)``)
    a layer whose name it finds anywhere (``pattern.search``; anchor with ``^`` and ``$`` for whole names);
a callable ``where(name, module) -> bool``
    any rule at all.

A rule that selects nothing is an error that lists some candidate names; a glob without wildcards gets a hint to
write ``*name*`` for a substring.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Callable

from torch import nn

__all__ = ["module_selector", "candidate_layers", "select_layers", "structured_layers", "is_pointwise_conv",
           "WHERE_RULES"]

WHERE_RULES = ("None (every candidate), a glob (str, matched against the whole qualified name), a list of globs, "
               "a compiled regex (re.search on the name) or a callable(name, module) -> bool")


def is_pointwise_conv(module: nn.Module) -> bool:
    """An ``nn.Conv2d`` (or subclass) with a 1×1 kernel and ``groups=1``: a matrix applied to every pixel."""
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and module.groups == 1


def is_candidate(module: nn.Module) -> bool:
    return type(module) is nn.Linear or is_pointwise_conv(module)


def module_selector(where) -> Callable[[str, nn.Module], bool]:
    """``where`` (see the module docstring) as a predicate ``(name, module) -> bool``."""
    if where is None:
        return lambda name, module: True
    if isinstance(where, str):
        return lambda name, module: fnmatch.fnmatchcase(name, where)
    if isinstance(where, re.Pattern):
        return lambda name, module: where.search(name) is not None
    if isinstance(where, (list, tuple)):
        if not where or not all(isinstance(w, str) for w in where):
            raise TypeError(f"where as a list must hold one or more glob strings; got {where!r}")
        patterns = tuple(where)
        return lambda name, module: any(fnmatch.fnmatchcase(name, p) for p in patterns)
    if callable(where):
        return where
    raise TypeError(f"where must be {WHERE_RULES}; got {type(where).__name__}")


def candidate_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``nn.Linear`` and pointwise ``nn.Conv2d`` of ``model`` with its qualified name, in module order."""
    return [(name, module) for name, module in model.named_modules() if name and is_candidate(module)]


def structured_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers of ``model`` that are already structured (structmat layers or structured pointwise convs)."""
    from structmat.layers.base import StructuredLinear
    from structmat.layers.pointwise_conv import StructuredPointwiseConv2d

    found, inside_convs = [], set()
    for name, module in model.named_modules():  # parents come before their children
        if isinstance(module, StructuredPointwiseConv2d):
            found.append((name, module))
            inside_convs.add(f"{name}.linear" if name else "linear")
        elif isinstance(module, StructuredLinear) and name not in inside_convs:
            found.append((name, module))
    return found


def _hint(where, names: list[str]) -> str:
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    hint = ""
    if isinstance(where, str) and not any(c in where for c in "*?["):
        hint = f"; a glob must match the whole name: for names containing {where!r} write '*{where}*'"
    return f"candidates: {shown}{hint}"


def select_layers(model: nn.Module, where=None) -> list[tuple[str, nn.Module]]:
    """The candidates of ``model`` that ``where`` selects, in module order.

    Raises
    ------
    ValueError
        ``where`` selects nothing (the message lists candidate names and the layers already structured), or the
        model has no candidate at all.
    TypeError
        ``where`` is not one of :data:`WHERE_RULES`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module; got {type(model).__name__}")
    select = module_selector(where)
    candidates = candidate_layers(model)
    already = [name for name, _ in structured_layers(model)]
    done = f"; already structured: {', '.join(already[:8])}{' ...' if len(already) > 8 else ''}" if already else ""
    if not candidates:
        raise ValueError(f"{type(model).__name__} has no nn.Linear or pointwise (1x1, groups=1) nn.Conv2d left to "
                         f"compress{done}")
    chosen = [(name, module) for name, module in candidates if select(name, module)]
    if not chosen:
        raise ValueError(f"where={where!r} selects none of the {len(candidates)} candidate layers; "
                         f"{_hint(where, [n for n, _ in candidates])}{done}")
    return chosen
