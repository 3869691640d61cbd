"""One look per family across the project's figures, and the grouping of families whose results coincide.

Every figure that draws families takes its colour, marker and line style from :func:`family_style`, so a family
looks the same in the error curves, the speed chart and the demo's figure. Several families contain low rank and
return it when nothing better fits (``structmat.families.CONTAINS_LOWRANK``), so their curves often coincide
exactly; :func:`identical_groups` finds such families, and the figures draw each group once with a label naming
all its members instead of hiding curves under one another.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["family_style", "family_fill", "identical_groups", "group_label", "REFERENCE_STYLE"]

# Strong, distinct colours in registry order (matplotlib's tab10 without its grey, then teal and wine); low rank,
# the reference, is black and a dense layer grey. Markers and line styles differ too, so no family depends on colour.
_COLOURS = ("#1f77b4", "#17becf", "#2ca02c", "#8c564b", "#bcbd22", "#ff7f0e", "#d62728", "#9467bd", "#e377c2",
            "#AA3377", "#1b9e77", "#004488", "#EE7733")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*", "d", "8")
_LINESTYLES = ("-", "--", "-.", ":")

#: Low rank, drawn as the reference line: every family that contains it should lie on or below it.
REFERENCE_STYLE = {"color": "black", "linestyle": "--", "marker": "", "linewidth": 1.6, "zorder": 5}


def _family_index(name: str) -> int:
    from structmat.families import FAMILIES

    names = [f for f in FAMILIES if f not in ("dense", "lowrank")]
    if name in names:
        return names.index(name)
    # A name outside the registry (a variant label such as "sss[ordering=none]"): a stable index from its text.
    return len(names) + sum(name.encode()) % 7


def family_style(name: str) -> dict:
    """Matplotlib keyword arguments (``color``, ``marker``, ``linestyle``) that draw ``name`` the same everywhere.

    ``lowrank`` gets :data:`REFERENCE_STYLE` (black, dashed); ``dense`` is solid grey; every other registered
    family a colour, a marker and a line style of its own.
    """
    if name == "lowrank":
        return dict(REFERENCE_STYLE)
    if name == "dense":
        return {"color": "0.35", "linestyle": "-", "marker": "", "linewidth": 1.6}
    i = _family_index(name)
    return {"color": _COLOURS[i % len(_COLOURS)], "marker": _MARKERS[i % len(_MARKERS)],
            "linestyle": _LINESTYLES[i % len(_LINESTYLES)]}


def family_fill(name: str) -> str:
    """The fill colour of ``name`` in bar charts: its line colour, near-black for low rank and light grey for a
    layer kept dense (so the two stay apart where a dashed line cannot be drawn)."""
    return {"lowrank": "0.15", "dense": "0.8"}.get(name) or family_style(name)["color"]


def identical_groups(series: Mapping[str, Sequence], *, atol: float = 1e-9) -> list[list[str]]:
    """Families whose series are equal element by element (within ``atol``), in the order of ``series``.

    Parameters
    ----------
    series : mapping of name to sequence of numbers (or of tuples of numbers)
        One curve per family; ``None`` entries compare equal only to ``None``.
    atol : float
        Largest absolute difference still counted as equal.

    Returns
    -------
    list of list of str
        Every name exactly once; a group's first member is the first of them in ``series``.

    Examples
    --------
    >>> identical_groups({"lowrank": [0.9, 0.7], "sss": [0.9, 0.75], "hodlr": [0.9, 0.7]})
    [['lowrank', 'hodlr'], ['sss']]
    """
    def as_array(values):
        return np.array([np.nan if v is None else v for v in np.asarray(values, dtype=object).ravel()], dtype=float)

    arrays = {name: as_array(values) for name, values in series.items()}
    groups: list[list[str]] = []
    for name, values in arrays.items():
        for group in groups:
            first = arrays[group[0]]
            if first.shape == values.shape and np.allclose(first, values, rtol=0.0, atol=atol, equal_nan=True):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def group_label(group: Sequence[str], *, reference: str | None = "lowrank") -> str:
    """The legend text of a group: ``"sss"``, or ``"hodlr = hedlr (identical)"``; the reference is named as such."""
    names = [f"{n} (reference)" if n == reference else n for n in group]
    if len(names) == 1:
        return names[0]
    return " = ".join(names) + " (identical)"
