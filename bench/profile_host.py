"""Host (CPU) cost of one eager ``sparsefx::tile_linear`` call after kernel choice.

For µs-size layers the eager op is host-bound (bench/RESULTS.md run 5, `chosen µs`);
this prints the per-call host time of the op next to ``F.linear`` and a cProfile of
the op's Python path, to find what to trim.

    PYTHONPATH=. python bench/profile_host.py [--layout fm|rm] [--calls 2000]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch
import torch.nn.functional as F

from sparsefx.patterns.tile import TileLayout, pack, unpack


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layout", default="fm", choices=["fm", "rm"])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--mkn", default="4096,768,3072")
    args = ap.parse_args()
    from sparsefx.runtime.cuda import dispatch, register_cuda_kernels
    assert register_cuda_kernels()
    M, K, N = map(int, args.mkn.split(","))
    G = 128
    gen = torch.Generator().manual_seed(0)
    T = -(-N // G)
    keep = torch.rand(T, K, generator=gen).argsort(1).argsort(1) < K // 4
    packed = pack(torch.randn(N, K) * 0.05, TileLayout(N, K, G, torch.arange(N), keep))
    values, row_idx, row_ptr, col_map = (t.cuda() for t in (
        packed.values.half(), packed.row_idx, packed.row_ptr, packed.col_map))
    b = torch.randn(N, device="cuda", dtype=torch.float16)
    fm = args.layout == "fm"
    x_rm = torch.randn(M, K, device="cuda", dtype=torch.float16)
    x = x_rm.t().contiguous() if fm else x_rm
    w = unpack(packed).half().cuda()
    op_args = (x, values, row_idx, row_ptr, col_map, b, N, "none", fm)
    dec = dispatch.decide(*op_args, force=True)
    print(f"{M}x{K}->{N} {args.layout}: choice {dec.choice} {dec.config}")

    def per_call(fn):
        for _ in range(50):
            fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(args.calls):
            fn()
        host = (time.perf_counter() - t) / args.calls
        torch.cuda.synchronize()
        return host * 1e6

    op = torch.ops.sparsefx.tile_linear
    print(f"host µs per call: F.linear {per_call(lambda: F.linear(x_rm, w, b)):.1f}, "
          f"op {per_call(lambda: op(*op_args)):.1f}, "
          f"sparse_forward {per_call(lambda: dispatch.sparse_forward(*op_args, dispatch.get_plan(row_ptr, col_map, N, G), dec.config)) if dec.config else float('nan'):.1f}")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.calls):
        op(*op_args)
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(22)


if __name__ == "__main__":
    main()
