"""How an ``HMatrixLinear`` batches its leaves (pure NumPy; used once per layer, at construction).

A low-rank leaf ``U_b V_bᵀ`` is applied in two stages, each batched over *clusters* rather than leaves:

1. per column cluster ``σ`` (the distinct column ranges of low-rank leaves), ``t_σ = x[:, σ] [V_b1 V_b2 …]``: one
   product with the ranks of every leaf on ``σ`` side by side;
2. per row cluster ``τ``, ``y[:, τ] += [t_b1 t_b2 …] [U_b1 U_b2 …]ᵀ``, gathering each leaf's part of stage 1.

Clusters of one size share a ``torch.bmm`` (their total ranks padded to the largest in the group, as long as padding
at most doubles the group's numbers, ``PAD_SLACK``). A HEDLR grid of 32 × 32 leaves thus takes two batched products instead of 2048 small
ones. Padded slots are never read by stage 2 (its gather points them at a zero column), so their parameters get no
gradient and do not change the output. Dense leaves are batched by shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Group", "Plan", "make_plan", "PAD_SLACK"]

#: Clusters of one size share a padded batch only while padding adds at most this share of its numbers. Generous,
#: because each extra batch costs several tensor operations (about 10-30 µs each on one core), which outweighs the
#: multiply-adds of padding for the small blocks hierarchical partitions have.
PAD_SLACK = 1.0


@dataclass
class Group:
    """One batched product.

    ``members`` are leaf indices (dense) or cluster keys ``(start, stop)`` (stage 1: columns, stage 2: rows);
    ``size`` is each member's extent (``(m_b, n_b)`` for dense); ``width`` the padded rank (stage 1 and 2).
    ``in_index`` holds the input positions, flat: columns of ``x`` (dense, stage 1) or positions in the stage-1
    output ``t`` (stage 2, where ``t_size`` is the zero column). ``out_rows`` holds the output rows, flat, or is
    None when the members tile ``[0, m)`` in order and the output is added without a scatter.
    """

    members: list
    size: object
    width: int
    in_index: np.ndarray
    out_rows: np.ndarray | None


@dataclass
class Plan:
    dense: list[Group] = field(default_factory=list)
    columns: list[Group] = field(default_factory=list)
    rows: list[Group] = field(default_factory=list)
    t_size: int = 0
    #: leaf -> (group, member, first slot) of its V_b in stage 1, of its U_b in stage 2, of its D_b among dense groups
    v_slot: dict = field(default_factory=dict)
    u_slot: dict = field(default_factory=dict)
    d_slot: dict = field(default_factory=dict)


def _pack(sizes: dict, totals: dict) -> list[list]:
    """Split the keys into batches of equal size, splitting where padding totals to the batch maximum would
    add more than ``PAD_SLACK``; each batch is returned sorted by its keys."""
    by_size: dict = {}
    for key, size in sizes.items():
        by_size.setdefault(size, []).append(key)
    batches = []
    for keys in by_size.values():
        keys = sorted(keys, key=lambda k: -totals[k])
        current = [keys[0]]
        for key in keys[1:]:
            top = totals[current[0]]
            if top * (len(current) + 1) <= (1 + PAD_SLACK) * (sum(totals[k] for k in current) + totals[key]):
                current.append(key)
            else:
                batches.append(sorted(current))
                current = [key]
        batches.append(sorted(current))
    return batches


def _tiles(ranges: list[tuple[int, int]], m: int) -> bool:
    return ranges[0][0] == 0 and ranges[-1][1] == m and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def make_plan(table: np.ndarray, m: int) -> Plan:
    """The batching plan for a leaf table ``(r0, r1, c0, c1, rank)`` of an ``m``-row matrix."""
    plan = Plan()
    table = np.asarray(table)[:, :5].tolist()
    dense_by_shape: dict = {}
    col_leaves: dict = {}
    row_leaves: dict = {}
    for b, (r0, r1, c0, c1, r) in enumerate(table):
        if r < 0:
            dense_by_shape.setdefault((r1 - r0, c1 - c0), []).append(b)
        elif r > 0:
            col_leaves.setdefault((c0, c1), []).append(b)
            row_leaves.setdefault((r0, r1), []).append(b)
    for (mb, nb), leaves in dense_by_shape.items():
        leaves = sorted(leaves, key=lambda b: (table[b][0], table[b][2]))
        g = len(plan.dense)
        for i, b in enumerate(leaves):
            plan.d_slot[b] = (g, i)
        cols = np.concatenate([np.arange(table[b][2], table[b][3]) for b in leaves])
        ranges = [(table[b][0], table[b][1]) for b in leaves]
        rows = None if _tiles(ranges, m) else np.concatenate([np.arange(a, z) for a, z in ranges])
        plan.dense.append(Group(leaves, (mb, nb), nb, cols, rows))
    # Stage 1: column clusters; t holds, per group, its members' padded slots side by side.
    totals = {key: sum(table[b][4] for b in leaves) for key, leaves in col_leaves.items()}
    t_position = {}  # leaf -> position of its first component in t
    offset = 0
    for members in _pack({key: key[1] - key[0] for key in col_leaves}, totals) if col_leaves else []:
        g, width = len(plan.columns), max(totals[key] for key in members)
        for i, key in enumerate(members):
            slot = 0
            for b in col_leaves[key]:
                plan.v_slot[b] = (g, i, slot)
                t_position[b] = offset + i * width + slot
                slot += table[b][4]
        cols = np.concatenate([np.arange(a, z) for a, z in members])
        plan.columns.append(Group(members, members[0][1] - members[0][0], width, cols, None))
        offset += len(members) * width
    plan.t_size = offset
    # Stage 2: row clusters gather their leaves' parts of t (padding reads the zero column at t_size).
    totals = {key: sum(table[b][4] for b in leaves) for key, leaves in row_leaves.items()}
    for members in _pack({key: key[1] - key[0] for key in row_leaves}, totals) if row_leaves else []:
        g, width = len(plan.rows), max(totals[key] for key in members)
        gather = np.full((len(members), width), plan.t_size, dtype=np.int64)
        for i, key in enumerate(members):
            slot = 0
            for b in row_leaves[key]:
                r = table[b][4]
                plan.u_slot[b] = (g, i, slot)
                gather[i, slot:slot + r] = t_position[b] + np.arange(r)
                slot += r
        rows = None if _tiles(members, m) else np.concatenate([np.arange(a, z) for a, z in members])
        plan.rows.append(Group(members, members[0][1] - members[0][0], width, gather.ravel(), rows))
    return plan
