"""CPU tests of :mod:`sparsefx.runtime.cuda.plan` (host-side facts about a packed
weight): the flags that decide which store path the kernels may take."""
from __future__ import annotations

import pytest
import torch

from sparsefx.runtime.cuda.plan import build_plan


def plan_for(col_map, out_features, G, counts=None):
    T = -(-len(col_map) // G)
    counts = counts or [3] * T
    row_ptr = torch.tensor([0] + counts).cumsum(0)
    return build_plan(row_ptr, torch.tensor(col_map), out_features, G)


def test_every_feature_kept_is_storable():
    """col_map = arange(N): whole tiles, and the edge tile's padding rows lie past N."""
    for N in (256, 300, 100):
        plan = plan_for(list(range(N)), N, 128)
        assert plan.tma_store_ok and plan.missing is None


def test_gap_between_tiles_is_storable():
    """Pruned features between tiles: each tile's rows are still one run, and the
    missing rows are never inside a tile's block."""
    kept = list(range(0, 128)) + list(range(138, 300))      # features 128..137 pruned
    plan = plan_for(kept, 300, 128)
    assert plan.tma_store_ok
    assert plan.missing.tolist() == list(range(128, 138))
    assert not plan.cols_contig        # tile 1 starts at 138: not 16-aligned
    assert not plan.tile_starts_aligned    # nor 8-aligned: no bulk stores row-major
    assert plan.can_bulk_store(out_feature_major=True)
    assert not plan.can_bulk_store(out_feature_major=False)
    assert plan_for(list(range(0, 128)) + list(range(144, 300)), 300, 128).tile_starts_aligned


def test_not_storable_when_a_tile_block_would_cover_other_rows():
    # scattered features inside a tile
    kept = [0, 2] + list(range(4, 130))
    assert not plan_for(kept, 130, 128).tma_store_ok
    # the last features are pruned: the edge tile's padding rows would be real rows
    # (N - 5 .. N - 1) that must keep activation(bias)
    assert not plan_for(list(range(295)), 300, 128).tma_store_ok
    # no features at all
    assert not plan_for([], 10, 128, counts=[]).tma_store_ok



# --------------------------------------------------------------------------- stream-K
def _segments(plan, block_k, M, programs, block_n=128, block_m=128, group_cb=8):
    items, progs, slots = plan.stream_k_for(block_n, block_m, block_k, M, programs,
                                            group_cb, "cpu")
    rows = items.tolist()
    per_prog = []
    for first, n_rows, whole_steps in progs.tolist():
        mine = rows[first:first + n_rows]
        assert n_rows >= 1 and whole_steps == sum(r[5] for r in mine if r[7] == 0)
        # at most one partial segment, first; at most one finishing segment, last
        assert all(r[7] == 0 for r in mine[1:-1])
        assert mine[0][7] <= 0 or n_rows == 1
        assert len(mine) == 1 or mine[-1][7] >= 0
        per_prog.append(mine)
    assert sum(len(m) for m in per_prog) == len(rows)
    return per_prog, slots


@pytest.mark.parametrize("counts,M,programs", [
    ([300, 0, 17, 128, 64], 700, 7),     # uneven, an empty tile, ragged k_t
    ([256] * 6, 4096, 132),              # BERT-like: 192 items on 132 programs
    ([1000, 10], 128, 5),                # one item longer than a range: 3+ segments
    ([64, 64], 100, 50),                 # more programs than K-steps
])
def test_stream_k_covers_every_step_once_and_balances(counts, M, programs):
    """Every item's K-steps are covered exactly once by its segments; programs get
    equal step counts (±1); an item's finishing segment (the one that adds the
    partial sums) is its first segment and sits in the highest program id among the
    item's segments, with one slot per other segment."""
    G, block_k = 128, 64
    plan = plan_for(list(range(G * len(counts))), G * len(counts), G, counts)
    per_prog, slots = _segments(plan, block_k, M, programs)
    totals = [sum(r[5] for r in rows) for rows in per_prog]
    assert max(totals) - min(totals) <= 1
    covered: dict = {}
    for p, rows in enumerate(per_prog):
        for start, k_t, j0, mb, k0, steps, slot, partials in rows:
            covered.setdefault((j0, mb), []).append((k0, steps, p, slot, partials, k_t))
    num_mb = -(-M // 128)
    assert len(covered) == len(counts) * num_mb
    used_slots = []
    for segs in covered.values():
        k_t = segs[0][5]
        n_steps = max(1, -(-k_t // block_k))
        ks = sorted((k0 // block_k, k0 // block_k + steps) for k0, steps, *_ in segs)
        assert ks[0][0] == 0 and ks[-1][1] == n_steps
        assert all(a[1] == b[0] for a, b in zip(ks, ks[1:]))
        finishers = [s for s in segs if s[4] >= 0]
        assert len(finishers) == 1
        _, _, p_fin, first_slot, n_parts, _ = finishers[0]
        assert finishers[0][0] == 0 and n_parts == len(segs) - 1
        others = [s for s in segs if s[4] < 0]
        assert all(s[2] < p_fin for s in others)
        assert sorted(s[3] for s in others) == list(range(first_slot, first_slot + n_parts))
        used_slots += [s[3] for s in others] + ([first_slot + n_parts] if n_parts else [])
    assert sorted(used_slots) == list(range(slots))     # the finisher's own slot last


def test_stream_k_keeps_whole_items_when_ranges_align():
    """When every range is a whole number of items, nothing is split (no slots)."""
    plan = plan_for(list(range(256)), 256, 128, [128, 128])     # 2 steps per item
    per_prog, slots = _segments(plan, 64, 512, 4)                # 8 items, 16 steps
    assert slots == 0
    assert all(r[7] == 0 for rows in per_prog for r in rows)
