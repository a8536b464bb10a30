"""Where does split-K's time go? Times the grid kernel's split configs with the end of
a part (``triton_tile._finish_split_part``) replaced by cut-down versions. Timing only:
the variants other than ``full`` compute wrong outputs on purpose.

    python bench/probe_split_cost.py --variant full      # one variant per process:
    python bench/probe_split_cost.py --variant store     # Triton caches compiled kernels

Variants: ``full`` (the shipped code); ``epilogue`` (each part runs the ordinary
epilogue on its own sum: the schedule's cost alone); ``store`` (each part stores its
fp32 sum, nothing else); ``atomic`` (store, barrier, counter; the last part does no
reduction); ``reduce_own`` (as full, but the last part reads only its own sum back).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tile import random_layer  # noqa: E402
from sparsefx.runtime.cuda import triton_tile  # noqa: E402

#: the shipped fix-up, kept before main() swaps the module's name for a variant
_shipped_finish = triton_tile._finish_split_part


@triton.jit
def _epilogue_only(acc, ws_ptr, cnt_ptr, group, parts, part, part_base, mb, num_mb,
                   j0, c0, offs_m, m_mask, n_kept, col_map_ptr, bias_ptr, out_ptr,
                   stride_on, stride_om, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                   CHUNK: tl.constexpr, MAX_PARTS: tl.constexpr, HAS_BIAS: tl.constexpr,
                   ACT: tl.constexpr,
                   COLS_CONTIG: tl.constexpr, WIDE_INDEX: tl.constexpr):
    rows = tl.arange(0, BLOCK_N)
    cols = c0 + rows
    n_mask = (j0 + rows) < n_kept
    b = triton_tile._load_bias(bias_ptr, cols, n_mask, HAS_BIAS)
    triton_tile._store_epilogue(acc, b, cols, n_mask, offs_m, m_mask, out_ptr, stride_on,
                                stride_om, HAS_BIAS, ACT, WIDE_INDEX)


@triton.jit
def _store_only(acc, ws_ptr, cnt_ptr, group, parts, part, part_base, mb, num_mb,
                j0, c0, offs_m, m_mask, n_kept, col_map_ptr, bias_ptr, out_ptr,
                stride_on, stride_om, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                CHUNK: tl.constexpr, MAX_PARTS: tl.constexpr, HAS_BIAS: tl.constexpr,
                ACT: tl.constexpr, COLS_CONTIG: tl.constexpr, WIDE_INDEX: tl.constexpr):
    triton_tile._store_part_sum(acc, ws_ptr, (part_base + part) * num_mb + mb, BLOCK_N,
                                BLOCK_M)


@triton.jit
def _store_atomic(acc, ws_ptr, cnt_ptr, group, parts, part, part_base, mb, num_mb,
                  j0, c0, offs_m, m_mask, n_kept, col_map_ptr, bias_ptr, out_ptr,
                  stride_on, stride_om, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                  CHUNK: tl.constexpr, MAX_PARTS: tl.constexpr, HAS_BIAS: tl.constexpr,
                  ACT: tl.constexpr, COLS_CONTIG: tl.constexpr, WIDE_INDEX: tl.constexpr):
    triton_tile._store_part_sum(acc, ws_ptr, (part_base + part) * num_mb + mb, BLOCK_N,
                                BLOCK_M)
    triton_tile._arrive_last(cnt_ptr + group * num_mb + mb, parts)


@triton.jit
def _reduce_own(acc, ws_ptr, cnt_ptr, group, parts, part, part_base, mb, num_mb,
                j0, c0, offs_m, m_mask, n_kept, col_map_ptr, bias_ptr, out_ptr,
                stride_on, stride_om, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                CHUNK: tl.constexpr, MAX_PARTS: tl.constexpr, HAS_BIAS: tl.constexpr,
                ACT: tl.constexpr, COLS_CONTIG: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """The shipped fix-up told that its own row is the group's only one (part 0 of a
    group starting at its row, MAX_PARTS 1): it counts arrivals as usual, and the last
    part reads back its own sum alone."""
    _shipped_finish(acc, ws_ptr, cnt_ptr, group, parts, 0, part_base + part, mb, num_mb,
                    j0, c0, offs_m, m_mask, n_kept, col_map_ptr, bias_ptr, out_ptr,
                    stride_on, stride_om, BLOCK_N, BLOCK_M, CHUNK, 1, HAS_BIAS, ACT,
                    COLS_CONTIG, WIDE_INDEX)


VARIANTS = {"epilogue": _epilogue_only, "store": _store_only, "atomic": _store_atomic,
            "reduce_own": _reduce_own}
CASES = [(4096, 3072, 768, 0.75, True), (4096, 3072, 768, 0.9, False),
         (4096, 3072, 768, 0.9, True), (16, 4096, 4096, 0.75, False)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="full", choices=["full", *VARIANTS])
    args = ap.parse_args()
    if args.variant != "full":
        triton_tile._finish_split_part = VARIANTS[args.variant]
    from sparsefx.runtime.cuda import dispatch, register_cuda_kernels
    from sparsefx.runtime.cuda.plan import get_plan
    from sparsefx.runtime.cuda.triton_tile import TileConfig as C
    assert register_cuda_kernels()
    gen = torch.Generator().manual_seed(0)
    for M, K, N, sp, uneven in CASES:
        _, packed, b, _ = random_layer(N, K, 128, sp, uneven, gen)
        x = torch.randn(K, M, device="cuda", dtype=torch.float16)
        a = (x, packed.values, packed.row_idx, packed.row_ptr, packed.col_map, b, N, "none",
             True)
        plan = get_plan(packed.row_ptr, packed.col_map, N, 128)
        cfgs = [C(64, 16, 128, 4, 4, split=s) for s in (0, 2, 4)] if M <= 64 else \
            [C(128, 128, 64, 8, 3, split=s) for s in (0, 1, 2)]
        res = []
        for cfg in cfgs:
            ms = min(dispatch._time_ms(lambda: dispatch.sparse_forward(*a, plan, cfg))
                     for _ in range(2))
            cut = plan.split_blocks_for(cfg.block_n, cfg.block_k, cfg.split, "cuda") \
                if cfg.split else None
            progs = (cut.table.shape[0] if cut else plan.num_tiles * 128 // cfg.block_n) \
                * -(-M // cfg.block_m)
            res.append(f"split{cfg.split} {ms * 1e3:.1f}us ({progs} programs)")
        print(f"{args.variant:10s} {M}x{K}->{N} {sp} {'uneven' if uneven else 'even'}: "
              + "; ".join(res), flush=True)


if __name__ == "__main__":
    main()
