"""Per-program timeline of the Triton grid tile kernel (bench/NOTES_tile.md, round 7).

Runs the shipped ``_tile_block`` inside a wrapper that reads ``%globaltimer`` when a
program starts, when its column block's fields have arrived and when it has issued its
stores, plus ``%smid``. Prints when programs start and end, how long they take on SMs
that hold one program or two, and per launch position (= tile, longest first), next to
the CUDA-graph time of the shipped kernel. The globaltimer ticks in steps of about
0.26 µs on the H200. (Round 7's split of a program into main loop and epilogue came
from a copy of ``_tile_block`` with one more timestamp; it is not kept.)

    PYTHONPATH=. python bench/probe_timeline.py [--mkn 4096,3072,768] [--sparsity 0.75]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

from sparsefx.runtime.cuda.dispatch import _time_ms, sparse_forward
from sparsefx.runtime.cuda.plan import get_plan
from sparsefx.runtime.cuda.triton_tile import TileConfig, _tile_block, _work_item

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tile import random_layer  # noqa: E402


@triton.jit
def _globaltimer(after):
    """ns since an arbitrary origin, read once ``after`` is available."""
    return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [after],
                                     dtype=tl.int64, is_pure=False, pack=1)


@triton.jit
def _sm_id(after):
    return tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r,r", [after],
                                     dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _timed_tile_kernel(x_ptr, w_ptr, row_idx_ptr, col_map_ptr, bias_ptr, out_ptr, blocks_ptr,
                       stamps_ptr, M, n_kept, num_cb, stride_xk, stride_xm, stride_on,
                       stride_om, G: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_CB: tl.constexpr):
    """``_tile_linear_kernel`` (feature-major, bias, no activation, contiguous
    columns) with three timestamps and the SM id per program."""
    pid = tl.program_id(0)
    t_start = _globaltimer(pid)
    pos, mb = _work_item(pid, tl.cdiv(M, BLOCK_M), num_cb, GROUP_CB)
    start = tl.load(blocks_ptr + 4 * pos)
    k_t = tl.load(blocks_ptr + 4 * pos + 1)
    j0 = tl.load(blocks_ptr + 4 * pos + 2)
    c0 = tl.load(blocks_ptr + 4 * pos + 3)
    t_fields = _globaltimer(start + k_t + j0 + c0)
    # no split-K: the workspace pointers are placeholders, group -1, one part
    _tile_block(x_ptr, w_ptr, row_idx_ptr, col_map_ptr, bias_ptr, out_ptr, out_ptr, out_ptr,
                start, k_t, j0, c0, mb, M, n_kept, stride_xk, stride_xm, stride_on,
                stride_om, -1, 1, 0, 0, G, BLOCK_N, BLOCK_M, BLOCK_K, True, 0, True, False,
                False, BLOCK_N, 1)
    t_end = _globaltimer(pid)
    row = stamps_ptr + 4 * pid
    tl.store(row, t_start)
    tl.store(row + 1, t_fields)
    tl.store(row + 2, t_end)
    tl.store(row + 3, _sm_id(pid).to(tl.int64))


def launch_position(w: int, num_cb: int, num_mb: int, group_cb: int) -> int:
    """Host copy of ``_work_item``'s first result: program ``w``'s column block."""
    per_group = group_cb * num_mb
    first = (w // per_group) * group_cb
    return first + (w % per_group) % min(num_cb - first, group_cb)


def ranges(ids: list) -> str:
    """[0, 1, 2, 5, 6] -> "0-2, 5-6"."""
    out, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(f"{ids[i]}-{ids[j]}" if j > i else f"{ids[i]}")
        i = j + 1
    return ", ".join(out)


def spread(v: torch.Tensor) -> str:
    return f"min {v.min():.2f} med {v.median():.2f} max {v.max():.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mkn", default="4096,3072,768")
    ap.add_argument("--sparsity", type=float, default=0.75)
    args = ap.parse_args()
    M, K, N = map(int, args.mkn.split(","))
    G, cfg = 128, TileConfig(128, 128, 64, 8, 3)       # the grid config chosen on BERT
    gen = torch.Generator().manual_seed(0)
    for uneven in (False, True):
        _, p, bias, _ = random_layer(N, K, G, args.sparsity, uneven, gen)
        x = torch.randn(K, M, device="cuda", dtype=torch.float16)
        plan = get_plan(p.row_ptr, p.col_map, N, G)
        assert plan.cols_contig
        blocks = plan.blocks_for(cfg.block_n, x.device)
        ref = torch.empty(N, M, device="cuda", dtype=torch.float16)

        def shipped():
            sparse_forward(x, p.values, p.row_idx, p.row_ptr, p.col_map, bias, N, "none",
                           True, plan, cfg, out=ref)
        num_cb = blocks.shape[0]
        grid = (num_cb * -(-M // cfg.block_m),)
        out = torch.full((N, M), float("nan"), device="cuda", dtype=torch.float16)
        stamps = torch.zeros(grid[0], 4, dtype=torch.int64, device="cuda")

        def timed():
            _timed_tile_kernel[grid](x, p.values, p.row_idx, p.col_map, bias, out, blocks,
                                     stamps, M, p.col_map.numel(), num_cb, *x.stride(),
                                     *out.stride(), G=G, BLOCK_N=cfg.block_n,
                                     BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
                                     GROUP_CB=cfg.group_cb, num_warps=cfg.num_warps,
                                     num_stages=cfg.num_stages)
        shipped()
        ms_shipped, ms_timed = _time_ms(shipped), _time_ms(timed)
        timed()
        torch.cuda.synchronize()
        assert torch.equal(out, ref), "the timed kernel must compute what the shipped one does"
        s = stamps.cpu().double()
        t0 = s[:, 0].min()
        start, fields, end = [(s[:, i] - t0) / 1e3 for i in range(3)]
        sm = s[:, 3].long()
        doubled = torch.bincount(sm)[sm] == 2
        print(f"{M}x{K}->{N} {args.sparsity:g} {'uneven' if uneven else 'even'}: graph µs "
              f"shipped {ms_shipped * 1e3:.1f}, timed {ms_timed * 1e3:.1f}; "
              f"{int(doubled.sum())} programs share an SM, {int((~doubled).sum())} alone")
        print(f"  µs from the first start: start {spread(start)}; fields known after "
              f"{spread(fields - start)}; end {spread(end)}")
        print(f"  duration sharing an SM {spread((end - start)[doubled])}; alone "
              f"{spread((end - start)[~doubled])}")
        pos = torch.tensor([launch_position(w, num_cb, -(-M // cfg.block_m), cfg.group_cb)
                            for w in range(grid[0])])
        alone = [w for w in range(grid[0]) if not bool(doubled[w])]
        print(f"  programs alone on an SM: {ranges(alone)}")
        for rep in range(2):                 # the same placement launch after launch?
            timed()
            torch.cuda.synchronize()
            sm2 = stamps[:, 3].cpu().long()
            alone2 = [w for w in range(grid[0]) if int(torch.bincount(sm2)[sm2[w]]) == 1]
            print(f"  relaunch {rep}: same SM per program {bool((sm2 == sm).all())}, "
                  f"same programs alone {alone2 == alone}")
        for q in range(min(num_cb, 8)):
            d = (end - start)[pos == q]
            print(f"  position {q} (k_t {int(blocks[q, 1])}): duration {spread(d)}")


if __name__ == "__main__":
    main()
