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


def test_sm90_store_picks_bulk_then_span_then_direct():
    """Bulk stores where they are valid; else whole row segments for a row-major
    output (which also write the pruned features); else direct stores."""
    every = plan_for(list(range(256)), 256, 128)
    assert every.sm90_store(True) == every.sm90_store(False) == "bulk"
    gap = plan_for(list(range(0, 128)) + list(range(138, 300)), 300, 128)
    assert (gap.sm90_store(True), gap.sm90_store(False)) == ("bulk", "span")
    scattered = plan_for([0, 2] + list(range(4, 130)), 130, 128)
    assert (scattered.sm90_store(True), scattered.sm90_store(False)) == ("direct", "span")
    assert scattered.kernel_writes_missing("span")
    assert not scattered.kernel_writes_missing("direct")
    assert not scattered.kernel_writes_missing("bulk")
    # an order the packer never makes: row segments would not partition the features
    shuffled = plan_for([1, 0] + list(range(2, 128)), 130, 128)
    assert not shuffled.cols_increasing and shuffled.sm90_store(False) == "direct"
    empty = plan_for([], 10, 128, counts=[])
    assert empty.sm90_store(False) == "direct"


def test_sm90_store_takes_a_requested_store_that_applies():
    """A config's ``store`` (kernel choice times direct stores against row segments)
    is honoured where it applies and refused, by name, where it does not."""
    cpu = torch.device("cpu")
    gap = plan_for(list(range(0, 128)) + list(range(138, 300)), 300, 128)
    assert gap.sm90_stores(False) == ("span", "direct")
    assert gap.sm90_stores(True) == ("bulk", "direct")
    assert gap.sm90_store(False, "direct") == "direct"
    assert gap.sm90_store(False, "span") == "span"
    assert gap.sm90_store_args(False, cpu, "direct") == ("direct", None)
    assert gap.sm90_store_args(False, cpu, "")[0] == "span"
    with pytest.raises(ValueError, match="'span' does not apply.*feature-major"):
        gap.sm90_store(True, "span")
    with pytest.raises(ValueError, match="'bulk'"):
        gap.sm90_store(False, "bulk")
    # where bulk stores apply, row segments are not offered (bulk is the tested path)
    every = plan_for(list(range(256)), 256, 128)
    assert every.sm90_stores(False) == every.sm90_stores(True) == ("bulk", "direct")
    with pytest.raises(ValueError):
        every.sm90_store(False, "span")
    shuffled = plan_for([1, 0] + list(range(2, 128)), 130, 128)
    assert shuffled.sm90_stores(False) == ("direct",)


def test_out_positions_invert_col_map():
    kept = [3, 4, 9] + list(range(20, 150))
    plan = plan_for(kept, 160, 64)
    pos = plan.out_positions(torch.device("cpu"))
    assert pos.dtype == torch.int32 and pos.shape == (160,)
    expected = [-1] * 160
    for j, f in enumerate(kept):
        expected[f] = j
    assert pos.tolist() == expected
    assert plan.out_positions(torch.device("cpu")) is pos        # built once
    assert plan.sm90_store_args(False, torch.device("cpu")) == ("span", pos)
    assert plan.sm90_store_args(True, torch.device("cpu")) == ("direct", None)
    assert plan_for([], 10, 128, counts=[]).out_positions("cpu").tolist() == [-1] * 10



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


def _parts_by_block(table):
    """{first column: [(first row, rows, group, parts, part, part_base)] in part order}"""
    blocks = {}
    for start, k, j0, c0, group, parts, part, base in table.tolist():
        blocks.setdefault(j0, []).append((start, k, group, parts, part, base))
    return {j0: sorted(v, key=lambda r: r[4]) for j0, v in blocks.items()}


def test_split_blocks_cover_each_block_once_in_parts_of_at_most_the_cap():
    """split_blocks_for: the parts of a block are consecutive row ranges that cover its
    k_t rows exactly once, each at most ceil(mean steps / split) K-steps, with part
    ranges of one group numbered 0..parts-1 and workspace rows that do not overlap."""
    counts = [40, 3, 0, 17, 64]                       # mean 24.8 -> 2 steps of 16
    plan = plan_for(list(range(5 * 32)), 5 * 32, 32, counts)
    starts = [0, 40, 43, 43, 60]
    for split, cap in ((1, 2), (2, 1)):
        cut = plan.split_blocks_for(16, 16, split, torch.device("cpu"))
        assert cut.table.dtype == torch.int32 and cut.table.shape[1] == 8
        blocks = _parts_by_block(cut.table)
        assert sorted(blocks) == [t * 32 + n0 for t in range(5) for n0 in (0, 16)]
        bases = set()
        for j0, parts in blocks.items():
            t = j0 // 32
            row = starts[t]
            for start, k, group, n_parts, part, base in parts:
                assert start == row and k <= cap * 16
                row += k
                assert n_parts == len(parts)
                assert group == -1 if n_parts == 1 else group >= 0
            assert row == starts[t] + counts[t]
            if parts[0][3] > 1:
                bases.add((parts[0][5], parts[0][3]))
        # workspace rows of the groups: disjoint ranges, together part_rows
        spans = sorted(bases)
        assert all(a + n <= b for (a, n), (b, _) in zip(spans, spans[1:]))
        assert sum(n for _, n in spans) == cut.part_rows
        assert cut.groups == len(spans)
        assert cut.max_parts == max(len(parts) for parts in blocks.values())
        lengths = [r[1] for r in cut.table.tolist()]
        assert lengths == sorted(lengths, reverse=True)       # longest first


def test_split_cuts_nothing_when_no_block_is_longer_than_the_cap():
    """Even tiles with split=1 (cap = the mean): nothing is cut, so the dispatcher
    runs (and kernel choice times) the plain grid kernel instead."""
    plan = plan_for(list(range(256)), 256, 128, [96, 96])
    cut = plan.split_blocks_for(64, 32, 1, torch.device("cpu"))
    assert cut.groups == 0 and cut.part_rows == 0
    assert [r[:4] for r in cut.table.tolist()] == \
        plan.blocks_for(64, torch.device("cpu")).tolist()
    assert plan.split_blocks_for(64, 32, 2, torch.device("cpu")).groups == 4


def test_split_workspace_is_kept_per_shape_and_released():
    plan = plan_for(list(range(256)), 256, 128, [96, 30])
    cut = plan.split_blocks_for(64, 32, 2, torch.device("cpu"))
    before = plan.workspace_keys()
    partials, counters = plan.split_workspace(cut, 64, 16, 40, "cpu")
    assert partials.shape == (cut.part_rows * 3, 64 * 16) and partials.dtype == torch.float32
    assert counters.shape == (cut.groups * 3,) and int(counters.abs().sum()) == 0
    assert cut.workspace_bytes(64, 16, 40) == partials.numel() * 4 + counters.numel() * 4
    assert plan.split_workspace(cut, 64, 16, 40, "cpu")[0] is partials
    plan.release_workspaces(keep=before)
    assert plan.workspace_keys() == before
    assert plan.split_workspace(cut, 64, 16, 40, "cpu")[0] is not partials
