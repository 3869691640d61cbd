"""A picture of a hierarchical matrix: its leaves, their ranks, and how much of each block is stored."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_hmatrix"]


def plot_hmatrix(M, path=None, *, ax=None, title=None):
    """Draw the leaves of ``M`` as rectangles in matrix orientation (row 0 at the top).

    Each leaf is coloured by the share of its dense size that it stores (``r_b (m_b + n_b) / (m_b n_b)``, 1 for
    dense leaves) and labelled with its rank, or ``D`` when dense, where the rectangle is large enough to read.

    Parameters
    ----------
    M : HMatrix
    path : path, optional
        Save the figure there (PNG, SVG, PDF by suffix).
    ax : matplotlib Axes, optional
        Draw into it instead of a new figure.
    title : str, optional
        Defaults to the class, shape, parameter share and leaf count.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    if ax is None and path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    from structmat.matrices.hmatrix import leaf_sizes

    m, n = M.shape
    own_figure = ax is None
    if own_figure:
        scale = 7.0 / max(m, n)
        fig, ax = plt.subplots(figsize=(max(3.5, n * scale + 1.6), max(3.0, m * scale + 0.8)))
    else:
        fig = ax.figure
    table = M.leaves
    mb, nb = table[:, 1] - table[:, 0], table[:, 3] - table[:, 2]
    share = leaf_sizes(table) / (mb * nb)
    patches = [Rectangle((c0, r0), c1 - c0, r1 - r0) for r0, r1, c0, c1 in table[:, :4].tolist()]
    collection = PatchCollection(patches, cmap="viridis", edgecolor="white", linewidth=0.6)
    collection.set_array(share)
    collection.set_clim(0.0, 1.0)
    ax.add_collection(collection)
    # Label leaves whose shorter side is at least ~2.5% of the longer matrix side, so labels stay readable.
    min_side = 0.025 * max(m, n)
    for (r0, r1, c0, c1, rank), s in zip(table[:, :5].tolist(), share):
        if min(r1 - r0, c1 - c0) >= min_side:
            label = "D" if rank < 0 else str(rank)
            size = float(np.clip(3 + 40 * min(r1 - r0, c1 - c0) / max(m, n), 5, 11))
            ax.text((c0 + c1) / 2, (r0 + r1) / 2, label, ha="center", va="center", fontsize=size,
                    color="black" if s > 0.6 else "white")
    ax.set_xlim(0, n)
    ax.set_ylim(m, 0)
    ax.set_aspect("equal")
    ax.set_xlabel("column (input feature)" + (", permuted" if M.col_order is not None else ""))
    ax.set_ylabel("row (output feature)" + (", permuted" if M.row_order is not None else ""))
    dense = int((table[:, 4] < 0).sum())
    ax.set_title(title or (f"{type(M).__name__} {m}×{n}: {M.nparams:_} parameters ({100 * M.params_share:.1f}%), "
                           f"{M.num_leaves} leaves ({dense} dense)"), fontsize=9)
    fig.colorbar(collection, ax=ax, fraction=0.046, pad=0.03, label="stored / dense numbers per leaf")
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
        if own_figure:
            plt.close(fig)
    return fig
