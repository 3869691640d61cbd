"""The settings of a whole-model compression, checked before anything runs."""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

__all__ = ["CompressionConfig", "default_cache_dir", "candidate_families", "check_family_options",
           "DEFAULT_GRID", "ALLOCATIONS", "MEASURES", "WEIGHTINGS"]

#: Shares of each layer's dense parameters at which every candidate family is fitted.
DEFAULT_GRID = (0.05, 0.15, 0.3, 0.45, 0.6, 0.8)
ALLOCATIONS = ("global", "uniform")
MEASURES = ("params", "bytes")
WEIGHTINGS = ("sensitivity", "output", "relative")
#: Options every data-aware fit takes besides the family's own (see structmat.approximators.data_aware).
_DATA_AWARE_OPTIONS = ("ridge", "refine_iterations")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/structmat/curves`` (``~/.cache/structmat/curves`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "structmat" / "curves"


@dataclass
class CompressionConfig:
    """How :func:`~structmat.compress.compress_model` compresses; every field has a default.

    Attributes
    ----------
    grid : tuple of float in (0, 1)
        Budgets of the curves, as shares of each layer's dense parameters.
    measure : {"params", "bytes"}
        What the budget counts: stored numbers, or deployment bytes (float32 values plus int32 indices). The uniform
        allocation gives every layer the same share of its dense parameters or of its dense bytes.
    weighting : {"sensitivity", "output", "relative"}
        The allocation minimises ``Σ w_l e_l²`` over layers, ``e_l`` the relative output error. ``"sensitivity"``
        measures ``w_l``: the squared relative change of the *model's* output on the first calibration items when
        only layer ``l`` is replaced by one of its fits (the one nearest ``sensitivity_share``), divided by that
        fit's ``e_l²`` — how much an error in this layer is amplified by the rest of the network (the empirical
        counterpart of the Hessian-trace sensitivities of mixed-precision allocation, Dong et al., "HAWQ-V2",
        NeurIPS 2020). ``"output"`` weights each layer by its output energy (``‖W Xᵀ‖²_F / N``: the summed squared
        layer output error), ``"relative"`` weights every layer alike.
    sensitivity_share : float
        The share of the fit used to probe a layer's sensitivity.
    family_options : dict of family name -> dict
        Options passed to that family's fit (checked against its signature before any fitting).
    rank_multiple : int, optional
        Round low rank's ranks down to multiples of this (hardware-friendly shapes).
    screen_share, screen_keep : float and int, optional
        Fit every family at ``screen_share`` first and keep the ``screen_keep`` best per layer for the whole grid
        (None for either: every family on the whole grid, which costs more time).
    fit_time_limit : float or None
        Seconds per fit, each in a child process; None fits in this process (no limit).
    cache_dir : path, optional
        Where curves are cached (default :func:`default_cache_dir`).
    max_slowdown : float or None
        Never pick a structured layer whose measured latency at ``latency_batch`` rows exceeds ``max_slowdown``
        times the dense layer's (1.0: never slower than dense); None ignores speed (and measures nothing for it,
        so the allocation is a deterministic function of the curves).
    latency_batch : int
        The batch size (rows) of that comparison: 1 or 32.
    measure_latency : bool
        Measure each chosen layer's latency against dense at batch 1 and 32 for the report.
    uniform_family : str, optional
        With ``allocation="uniform"``: the family (default: the one with the smallest summed error).
    row_mask : callable(item) -> bool tensor, optional
        Calibration rows to keep (see :mod:`structmat.compress.calibration`).
    progress : bool or None
        Progress bars; None shows them when stderr is a terminal.
    inplace : bool
        Modify the model itself instead of a deep copy.
    jobs : int
        Worker processes for the curve fits (:func:`structmat.parallel.run_grid`; ``-1``: one per CPU). 1, the
        default, fits one point after the other in children forked from this process.
    executor : None, str or dask Client
        ``"processes"``, ``"dask:local"``, ``"dask:tcp://host:8786"`` or a ``dask.distributed.Client`` (its workers
        must see ``cache_dir``); None: serial for ``jobs=1``, else a local process pool. The curves are the same
        bytes whatever runs them.
    sequential : bool
        After the allocation, fit each chosen layer again in the order the model calls it, on the inputs it sees
        in the model compressed so far, to reproduce the dense layer's outputs on the dense inputs (one partial
        forward pass of both models per group of layers; see :mod:`structmat.compress.sequential`).
    sequential_ridge : float
        The regularisation of those fits' least-squares target, relative to ``tr(C') / n``.
    refit_dense : bool
        With ``sequential``: set the layers kept dense to their least-squares weight on the new inputs too (no
        parameters added; their weights then differ from the original ones).
    """

    grid: tuple = DEFAULT_GRID
    measure: str = "params"
    weighting: str = "sensitivity"
    sensitivity_share: float = 0.3
    family_options: dict = field(default_factory=dict)
    rank_multiple: int | None = None
    screen_share: float | None = 0.25
    screen_keep: int | None = 3
    fit_time_limit: float | None = 120.0
    cache_dir: str | Path | None = None
    max_slowdown: float | None = 1.0
    latency_batch: int = 32
    measure_latency: bool = True
    uniform_family: str | None = None
    row_mask: Callable | None = None
    progress: bool | None = None
    inplace: bool = False
    jobs: int = 1
    executor: object = None
    sequential: bool = False
    sequential_ridge: float = 1e-3
    refit_dense: bool = False

    def replace(self, **changes) -> "CompressionConfig":
        """A copy with ``changes``; an unknown name is a TypeError listing the fields."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown compression settings {unknown}; accepted: {sorted(names)}")
        return dataclasses.replace(self, **changes)

    def show_progress(self) -> bool:
        return sys.stderr.isatty() if self.progress is None else bool(self.progress)

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()

    def check(self) -> "CompressionConfig":
        """Raise a ValueError/TypeError naming the first bad setting; return ``self``."""
        grid = tuple(self.grid)
        if not grid or not all(isinstance(s, numbers.Real) and not isinstance(s, bool) and 0 < s < 1 for s in grid):
            raise ValueError(f"grid must be shares in (0, 1); got {self.grid!r}")
        self.grid = tuple(sorted(set(float(s) for s in grid)))
        for name, value, accepted in (("measure", self.measure, MEASURES), ("weighting", self.weighting, WEIGHTINGS)):
            if value not in accepted:
                raise ValueError(f"{name} must be one of {accepted}; got {value!r}")
        if self.rank_multiple is not None and (isinstance(self.rank_multiple, bool) or
                                               not isinstance(self.rank_multiple, int) or self.rank_multiple < 1):
            raise ValueError(f"rank_multiple must be an int >= 1 or None; got {self.rank_multiple!r}")
        if (self.screen_share is None) != (self.screen_keep is None) and self.screen_keep is not None:
            raise ValueError("screening needs both screen_share and screen_keep (or neither)")
        if self.screen_share is not None and not 0 < self.screen_share < 1:
            raise ValueError(f"screen_share must be in (0, 1); got {self.screen_share!r}")
        if self.screen_keep is not None and (not isinstance(self.screen_keep, int) or self.screen_keep < 1):
            raise ValueError(f"screen_keep must be an int >= 1; got {self.screen_keep!r}")
        if self.fit_time_limit is not None and not self.fit_time_limit > 0:
            raise ValueError(f"fit_time_limit must be > 0 seconds or None; got {self.fit_time_limit!r}")
        if self.max_slowdown is not None and not self.max_slowdown > 0:
            raise ValueError(f"max_slowdown must be > 0 or None; got {self.max_slowdown!r}")
        if self.latency_batch not in (1, 32):
            raise ValueError(f"latency_batch must be 1 or 32; got {self.latency_batch!r}")
        if self.row_mask is not None and not callable(self.row_mask):
            raise TypeError(f"row_mask must be a callable(item) -> bool tensor; got {type(self.row_mask).__name__}")
        from structmat.parallel import check_jobs

        self.jobs = check_jobs(self.jobs)
        if not (isinstance(self.sequential_ridge, numbers.Real) and self.sequential_ridge >= 0):
            raise ValueError(f"sequential_ridge must be a float >= 0; got {self.sequential_ridge!r}")
        if not isinstance(self.family_options, dict):
            raise TypeError(f"family_options must be a dict of family name -> options dict; got "
                            f"{type(self.family_options).__name__}")
        return self


def candidate_families(families) -> list[str]:
    """The candidate family names: every registered family (dense included) by default, else ``families`` checked."""
    from structmat.families import FAMILIES, get_family

    if families is None:
        return list(FAMILIES)
    if isinstance(families, str):
        families = [families]
    names = []
    for name in families:
        get_family(name)
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError(f"families must name at least one family; known: {sorted(FAMILIES)}")
    return names


def check_family_options(family_options: dict, families: list[str]) -> dict[str, dict]:
    """Each candidate family's options, checked against its fit's signature: a misspelt option is one ValueError
    listing the accepted ones, before any fitting."""
    from structmat.families import get_family

    plan = {}
    for name in family_options:
        get_family(name)
        if name not in families:
            raise ValueError(f"family_options names {name!r}, which is not a candidate family ({families})")
    for name in families:
        options = dict(family_options.get(name, {}))
        if not isinstance(family_options.get(name, {}), dict):
            raise TypeError(f"family_options[{name!r}] must be a dict; got {type(family_options[name]).__name__}")
        fit = get_family(name).fit
        parameters = inspect.signature(fit).parameters
        accepted = [p for p, v in parameters.items() if p not in ("W", "budget", "inputs", "progress")
                    and v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD)]
        if "inputs" not in parameters:  # fitted by the generic data-aware fit, which adds these
            accepted += list(_DATA_AWARE_OPTIONS)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''} {unknown} for family {name!r}; "
                             f"accepted: {sorted(set(accepted))}")
        plan[name] = options
    return plan
