"""The sm90 tile kernel's [128, 384] cooperative items against its [128, 256] and
[128, 128] ones and dense cuBLAS, one layer at a time (bench/NOTES_tile.md round 23).

Why: at 75% sparsity the large shapes move L2 bytes at cuBLAS's rate with the tensor
cores half idle (round 5), and a third of those bytes are weight blocks, reloaded once
per token block. A 384-token block reloads them 2/3 as often.

Per case (fp16, G = 128, feature-major x [K, M] -> out [N, M], bias): every sm90 block
shape is first checked against the float64 reference of the masked dense matmul (output
poisoned with NaN before the call), then ``rounds`` alternating rounds time dense
``F.linear`` and each block shape, as kernel choice does (CUDA-graph median,
``dispatch._time_ms``), in a rotating order so each sees the same predecessors; the
table gives each one's median over the rounds and dense / it.

    PYTHONPATH=. python bench/probe_block384.py [--shapes large,bert] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from sparsefx.patterns.tile import unpack_tensors
from sparsefx.runtime.cuda import sm90_tile
from sparsefx.runtime.cuda.dispatch import _time_ms, sparse_forward
from sparsefx.runtime.cuda.plan import get_plan
from sparsefx.runtime.cuda.triton_tile import TileConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sm90 import G, packed_layer  # noqa: E402
from bench_tile import kept_counts  # noqa: E402

SHAPES = {"large": [(16384, 4096, 4096), (8192, 4096, 11008)],
          "bert": [(4096, 768, 3072), (4096, 3072, 768), (4096, 768, 768)]}
BLOCKS = [(128, 256), (128, 384), (128, 128)]


def sm90_config(bm: int) -> TileConfig:
    """The sm90 kernel for [128, bm] items, as kernel choice would configure it."""
    return TileConfig(128, bm, sm90_tile.BLOCK_K, 12, sm90_tile.BLOCKS[(128, bm)],
                      group_cb=32, flat=1, impl="sm90")


def case(M, K, N, sparsity, uneven, rounds, gen):
    T = -(-N // G)
    if uneven:
        keep = (kept_counts(T, K, sparsity, True, gen) / K).tolist()
    else:
        keep = [1.0 - sparsity] * T
    values, row_idx, row_ptr, col_map = packed_layer(N, K, keep, torch.float16, gen)
    x_fm = torch.randn(K, M, generator=gen).to("cuda", torch.float16)
    bias = (torch.randn(N, generator=gen) * 0.1).to("cuda", torch.float16)
    plan = get_plan(row_ptr, col_map, N, G)
    w = unpack_tensors(values, row_idx, row_ptr, col_map, N, K)
    ref = w.double() @ x_fm.double() + bias.double()[:, None]
    x_rm = x_fm.t().contiguous()
    w = w.contiguous()
    outs = {bm: torch.empty(N, M, dtype=torch.float16, device="cuda") for _, bm in BLOCKS}
    errs = {}
    for _, bm in BLOCKS:
        outs[bm].fill_(float("nan"))
        got = sparse_forward(x_fm, values, row_idx, row_ptr, col_map, bias, N, "none", True,
                             plan, sm90_config(bm), out=outs[bm]).double()
        errs[bm] = float((got - ref).norm() / ref.norm())
    del ref
    fns = {"dense": lambda: F.linear(x_rm, w, bias)}
    for _, bm in BLOCKS:
        fns[f"128x{bm}"] = (lambda bm=bm: sparse_forward(
            x_fm, values, row_idx, row_ptr, col_map, bias, N, "none", True, plan,
            sm90_config(bm), out=outs[bm]))
    names = list(fns)
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            times[n].append(_time_ms(fns[n]) * 1e3)
    med = {n: statistics.median(v) for n, v in times.items()}
    return med, errs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="large,bert")
    ap.add_argument("--sparsity", default="0.5,0.75,0.9")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(23)
    print(f"GPU {torch.cuda.get_device_name()}, fp16, G = {G}, feature-major, graph medians")
    print("| M×K→N | sparsity | tiles | dense µs | 128x256 µs | 128x384 µs | 128x128 µs "
          "| dense/256 | dense/384 | dense/128 | 384 vs 256 | max rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for group in args.shapes.split(","):
        for M, K, N in SHAPES[group]:
            for s in map(float, args.sparsity.split(",")):
                for uneven in (False, True):
                    med, errs = case(M, K, N, s, uneven, args.rounds, gen)
                    d = med["dense"]
                    print(f"| {M}×{K}→{N} | {s:.2f} | {'uneven' if uneven else 'even'} "
                          f"| {d:.1f} | {med['128x256']:.1f} | {med['128x384']:.1f} "
                          f"| {med['128x128']:.1f} | {d / med['128x256']:.2f}× "
                          f"| {d / med['128x384']:.2f}× | {d / med['128x128']:.2f}× "
                          f"| {med['128x384'] / med['128x256'] - 1:+.1%} "
                          f"| {max(errs.values()):.1e} |", flush=True)


if __name__ == "__main__":
    main()
