"""CPU tests of :mod:`sparsefx.runtime.cuda.plan` (host-side facts about a packed
weight): the flags that decide which store path the kernels may take."""
from __future__ import annotations

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



def test_blocks_table_lists_column_blocks_longest_tile_first():
    """The grid kernel's table: one row per column block, tiles by kept rows
    descending (ties in tile order), each row (first packed row, k_t, t*G + n0,
    col_map[t*G] + n0)."""
    counts = [2, 5, 0, 5]                       # tile 2 keeps nothing
    kept = list(range(0, 128)) + list(range(160, 288))     # features 128..159 pruned
    plan = plan_for(kept, 288, 64, counts)
    table = plan.blocks_for(32, torch.device("cpu"))
    starts = [0, 2, 7, 7]
    first_cols = [0, 64, 160, 224]
    expected = [(starts[t], counts[t], t * 64 + n0, first_cols[t] + n0)
                for t in (1, 3, 0, 2) for n0 in (0, 32)]
    assert table.dtype == torch.int32 and table.tolist() == [list(r) for r in expected]
    assert plan.blocks_for(32, torch.device("cpu")) is table      # built once
    assert plan.blocks_for(64, torch.device("cpu")).tolist() == \
        [list(r) for r in expected[::2]]


def test_blocks_table_agrees_with_the_flat_schedule():
    """Both kernels must see the same (start, k_t, column) for a column block."""
    plan = plan_for(list(range(3 * 64)), 3 * 64, 64, [4, 9, 1])
    table = {tuple(r[:3]) for r in plan.blocks_for(64, torch.device("cpu")).tolist()}
    items, _ = plan.schedule_for(64, 16, 16, 48, 2, 8, torch.device("cpu"))
    assert {tuple(r[:3]) for r in items.tolist()} == table
