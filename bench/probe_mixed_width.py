"""Would half-width programs for the heaviest tiles even out uneven tiles? A probe.

Round 10 (bench/NOTES_tile.md) found that cutting heavy column blocks along K costs
more than it balances on the BERT shapes: more programs than one wave holds, and the
parts' fp32 sums. This probe cuts them along N instead: a tile whose kept-K is above
``threshold`` × the mean runs as two programs of 64 columns each (the same K-steps,
but each step loads half the weight bytes), every other tile as one 128-column
program. No partial sums, and 3072→768 keeps one wave (192 + 32 programs for 264
slots). The kernel here is the grid kernel's main loop with a width field per column
block (weight loads and stores masked to it; the dot stays 128 wide). Timing only,
not shipped; the output is checked against the shipped kernel's.

    PYTHONPATH=. python bench/probe_mixed_width.py [--cases 4096,3072,768,0.75 ...]
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
from sparsefx.runtime.cuda.plan import get_plan  # noqa: E402
from sparsefx.runtime.cuda.triton_launch import launch  # noqa: E402
from sparsefx.runtime.cuda.triton_tile import TileConfig  # noqa: E402

HALF = 64


@triton.jit
def _mixed_kernel(x_ptr, w_ptr, row_idx_ptr, bias_ptr, out_ptr, blocks_ptr, M, n_kept,
                  num_cb, stride_xk, stride_xm, stride_on, stride_om,
                  G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_K: tl.constexpr, GROUP_CB: tl.constexpr, HALF_N: tl.constexpr,
                  USE_PDL: tl.constexpr):
    """Feature-major x, contiguous columns, bias, no activation. ``blocks_ptr``:
    int32 [num_cb, 5] = (first packed row, k_t, t*G + n0, first output feature,
    width), width HALF_N or BLOCK_N."""
    num_mb = tl.cdiv(M, BLOCK_M)
    pos, mb = triton_tile._work_item(tl.program_id(0), num_mb, num_cb, GROUP_CB)
    row = blocks_ptr + 5 * pos
    start = tl.load(row)
    k_t = tl.load(row + 1)
    j0 = tl.load(row + 2)
    c0 = tl.load(row + 3)
    width = tl.multiple_of(tl.load(row + 4), HALF_N)
    triton_tile._after_previous_kernel(USE_PDL)
    n0 = tl.multiple_of(j0 % G, HALF_N)
    ar_n = tl.arange(0, BLOCK_N)
    n_in = ar_n < width
    n_mask = n_in & (j0 + ar_n < n_kept)
    cols = tl.multiple_of(c0, 16) + ar_n
    b = tl.load(bias_ptr + cols, mask=n_mask, other=0.0).to(tl.float32)
    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    x_cols = offs_m * stride_xm
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    w_tile = w_ptr + start.to(tl.int64) * G + n0 + ar_n[None, :]
    idx_tile = row_idx_ptr + start
    for k in range(0, k_t, BLOCK_K):
        kk = k + offs_k
        k_mask = kk < k_t
        rows = tl.load(idx_tile + kk, mask=k_mask, other=0)
        xb = tl.load(x_ptr + (rows * stride_xk)[:, None] + x_cols[None, :],
                     mask=k_mask[:, None] & m_mask[None, :], other=0.0)
        wb = tl.load(w_tile + kk[:, None] * G, mask=k_mask[:, None] & n_in[None, :],
                     other=0.0)
        acc = tl.dot(tl.trans(wb), xb, acc)
    triton_tile._store_epilogue(acc, b, cols, n_mask, offs_m, m_mask, out_ptr, stride_on,
                                stride_om, True, 0, False)


def mixed_table(plan, threshold: float, device) -> torch.Tensor:
    """Column blocks in the grid kernel's launch order; tiles keeping more than
    ``threshold`` × the mean kept-K become two half-width blocks."""
    starts = plan._tile_starts()
    rows = []
    for t in plan._tile_order_host():
        k_t = plan.k_counts[t]
        if k_t > threshold * plan.mean_k:
            rows += [(starts[t], k_t, t * plan.G + h, plan.first_cols[t] + h, HALF)
                     for h in range(0, plan.G, HALF)]
        else:
            rows.append((starts[t], k_t, t * plan.G, plan.first_cols[t], plan.G))
    return torch.tensor(rows, dtype=torch.int32).reshape(-1, 5).to(device)


def run_mixed(x, p, bias, out, table, pdl: bool):
    M = x.shape[1]
    num_cb = table.shape[0]
    launch(_mixed_kernel, (num_cb * -(-M // 128),),
           (x, p.values, p.row_idx, bias, out, table),
           (M, p.col_map.numel(), num_cb, *x.stride(), *out.stride()),
           dict(G=128, BLOCK_N=128, BLOCK_M=128, BLOCK_K=64, GROUP_CB=8, HALF_N=HALF,
                USE_PDL=pdl),
           num_warps=8, num_stages=3, launch_pdl=pdl)


def main():
    from sparsefx.runtime.cuda.dispatch import _time_ms, sparse_forward
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="*", default=["4096,3072,768,0.75", "4096,3072,768,0.9",
                                                   "4096,768,768,0.75"])
    ap.add_argument("--thresholds", default="inf,1.3,1.15,1.0,0")
    args = ap.parse_args()
    pdl = triton_tile.pdl_enabled(torch.device("cuda"))
    configs = {"128x128 w8s3": TileConfig(128, 128, 64, 8, 3),
               "64x128 w4s4": TileConfig(64, 128, 64, 4, 4)}
    print(f"## mixed-width probe, fp16, G = 128, fm, CUDA-graph µs, PDL {pdl}")
    print("| case | profile | kept-K max/mean | config | programs | µs |")
    print("|---|---|---|---|---|---|")
    for case in args.cases:
        M, K, N, sparsity = case.split(",")
        M, K, N, sparsity = int(M), int(K), int(N), float(sparsity)
        for uneven in (False, True):
            gen = torch.Generator().manual_seed(0)
            _, p, bias, _ = random_layer(N, K, 128, sparsity, uneven, gen)
            x = torch.randn(K, M, device="cuda", dtype=torch.float16)
            plan = get_plan(p.row_ptr, p.col_map, N, 128)
            assert plan.cols_contig
            tag = f"| {M}×{K}→{N} {sparsity:g} | {'uneven' if uneven else 'even'} | " \
                  f"{plan.max_k / plan.mean_k:.2f} |"
            ref = None
            for name, cfg in configs.items():
                out = torch.empty(N, M, device="cuda", dtype=torch.float16)

                def shipped():
                    sparse_forward(x, p.values, p.row_idx, p.row_ptr, p.col_map, bias, N,
                                   "none", True, plan, cfg, out=out)
                shipped()
                if ref is None:
                    ref = out.clone()
                ms = _time_ms(shipped)
                n_prog = plan.blocks_for(cfg.block_n, x.device).shape[0] * -(-M // 128)
                print(f"{tag} shipped {name} | {n_prog} | {ms * 1e3:.1f} |")
            for thr in (float(t) for t in args.thresholds.split(",")):
                table = mixed_table(plan, thr, x.device)
                out = torch.full((N, M), float("nan"), device="cuda", dtype=torch.float16)
                run_mixed(x, p, bias, out, table, pdl)
                torch.cuda.synchronize()
                err = float((out.float() - ref.float()).abs().max())
                ms = _time_ms(lambda: run_mixed(x, p, bias, out, table, pdl))
                halves = int((table[:, 4] == HALF).sum())
                print(f"{tag} mixed, halves above {thr:g}× mean ({halves} half blocks) | "
                      f"{table.shape[0] * -(-M // 128)} | {ms * 1e3:.1f} "
                      f"(max diff {err:.1e}) |")


if __name__ == "__main__":
    main()
