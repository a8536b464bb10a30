"""Host (CPU) cost of one eager ``sparsefx::tile_linear`` call after kernel choice.

For µs-size layers the eager op is host-bound (bench/RESULTS.md run 5, `chosen µs`).
This prints, per layout, the host µs per call of ``F.linear`` and of the op in the
ways a user calls it (grad mode on with plain tensors, ``no_grad`` with parameters,
``inference_mode``; then ``inference_mode`` with the Python replay of the layer's launch
only (``dispatch._EagerRunner``, no C++ record: ``runtime/cuda/eager_fastpath.py``), and
without any replay), of ``sparse_forward`` with a Triton and an sm90 config, and of one
Triton launch through ``kernel[grid]`` vs the direct relaunch of
``runtime/cuda/triton_launch.py``; then a cProfile of the op's Python path.

Host time per call = wall time of N back-to-back calls / N, at a layer small enough
that the GPU never holds the host back (default M=256, 768→768).

    PYTHONPATH=. python bench/profile_host.py [--mkn 256,768,768] [--calls 3000]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch
import torch.nn.functional as F

from sparsefx.patterns.tile import TileLayout, pack, unpack


def per_call_us(fn, calls: int) -> float:
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - start) / calls
    torch.cuda.synchronize()
    return host * 1e6


def make_layer(M, K, N, G, gen, pruned_features=0.0):
    """A 75%-sparse TW layer (a quarter of K kept per tile) on the GPU; column pruning
    removes the fraction ``pruned_features`` of the output features (random ones)."""
    kept_cols = torch.randperm(N, generator=gen)[:N - round(N * pruned_features)].sort().values
    T = -(-kept_cols.numel() // G)
    keep = torch.rand(T, K, generator=gen).argsort(1).argsort(1) < K // 4
    packed = pack(torch.randn(N, K, generator=gen) * 0.05,
                  TileLayout(N, K, G, kept_cols, keep))
    tensors = tuple(t.cuda() for t in (packed.values.half(), packed.row_idx,
                                        packed.row_ptr, packed.col_map))
    return packed, tensors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--mkn", default="256,768,768")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile")
    args = ap.parse_args()
    from sparsefx.runtime.cuda import dispatch, eager_fastpath, register_cuda_kernels, \
        sm90_tile
    from sparsefx.runtime.cuda.triton_tile import TileConfig
    assert register_cuda_kernels()
    M, K, N = map(int, args.mkn.split(","))
    G = 128
    gen = torch.Generator().manual_seed(0)
    packed, (values, row_idx, row_ptr, col_map) = make_layer(M, K, N, G, gen)
    b = torch.randn(N, generator=gen).to("cuda", torch.float16)
    w = unpack(packed).half().cuda()
    params = (torch.nn.Parameter(values), torch.nn.Parameter(b))
    x_rm = torch.randn(M, K, generator=gen).to("cuda", torch.float16)
    op = torch.ops.sparsefx.tile_linear
    plan = dispatch.get_plan(row_ptr, col_map, N, G)
    print(f"# {torch.cuda.get_device_name()}, {M}x{K}->{N}, G={G}, 75%, fp16; host µs/call")
    print("| layout | F.linear | op (grad on) | op no_grad, params | op inference_mode "
          "| op inference_mode, Python replay | op inference_mode, no replay "
          "| sparse_forward triton | sparse_forward sm90 | chosen | C++ calls |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for fm in (True, False):
        x = x_rm.t().contiguous() if fm else x_rm
        op_args = (x, values, row_idx, row_ptr, col_map, b, N, "none", fm)
        dec = dispatch.decide(*op_args, force=True)
        t = lambda fn: per_call_us(fn, args.calls)  # noqa: E731
        cells = [t(lambda: F.linear(x_rm, w, b)), t(lambda: op(*op_args))]
        with torch.no_grad():
            cells.append(t(lambda: op(x, params[0], row_idx, row_ptr, col_map, params[1],
                                      N, "none", fm)))
        with torch.inference_mode():
            cells.append(t(lambda: op(*op_args)))
        cpp_calls = eager_fastpath.stats()[0]
        # the Python replay alone (no C++ record), then no replay at all
        dispatch._forget_fast_paths()
        register, eager_fastpath.register = eager_fastpath.register, lambda *a: False
        with torch.inference_mode():
            cells.append(t(lambda: op(*op_args)))
        dispatch._forget_fast_paths()
        make_runner, dispatch._eager_runner = dispatch._eager_runner, lambda *a: None
        with torch.inference_mode():
            cells.append(t(lambda: op(*op_args)))
        dispatch._eager_runner, eager_fastpath.register = make_runner, register
        dispatch._forget_fast_paths()
        triton_cfg = TileConfig(128, 64, 64, 4, 4)
        cells.append(t(lambda: dispatch.sparse_forward(*op_args, plan, triton_cfg)))
        if sm90_tile.available():
            sm90_cfg = TileConfig(128, 128, 64, 12, 6, group_cb=32, flat=1, impl="sm90")
            cells.append(t(lambda: dispatch.sparse_forward(*op_args, plan, sm90_cfg)))
        else:
            cells.append(float("nan"))
        print(f"| {'fm' if fm else 'rm'} | " + " | ".join(f"{c:.1f}" for c in cells) +
              f" | {dec.choice} {dec.config.impl if dec.config else ''} | {cpp_calls} |",
              flush=True)
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.calls):
                op(*op_args)
            prof.disable()
            torch.cuda.synchronize()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    print(f"\nC++ eager path: {'installed' if eager_fastpath.active() else 'not installed'}"
          f" ({eager_fastpath.why_not() or 'ok'})")
    print_launch_costs(values, row_idx, col_map, b, plan, x_rm, args.calls)


def print_launch_costs(values, row_idx, col_map, b, plan, x_rm, calls):
    """One Triton tile-kernel launch: ``kernel[grid]`` against the direct relaunch."""
    import triton
    from sparsefx.runtime.cuda import triton_launch
    from sparsefx.runtime.cuda.triton_tile import _tile_linear_kernel
    M, K = x_rm.shape
    N, G = plan.out_features, plan.G
    x = x_rm.t().contiguous()
    out = torch.empty(N, M, dtype=x.dtype, device=x.device)
    blocks = plan.blocks_for(128, x.device)
    grid = (blocks.shape[0] * triton.cdiv(M, 64),)
    # no split-K: the workspace and counter pointers are unused (SPLIT is False)
    tensors = (x, values, row_idx, col_map, b, out, blocks, values, values)
    scalars = (M, col_map.numel(), blocks.shape[0], M, 1, M, 1)
    consts = dict(G=G, BLOCK_N=128, BLOCK_M=64, BLOCK_K=64, GROUP_CB=8, HAS_BIAS=True,
                  ACT=0, COLS_CONTIG=plan.cols_contig, WIDE_INDEX=False, USE_PDL=False,
                  SPLIT=False, CHUNK=128, MAX_PARTS=1)
    jit = per_call_us(lambda: _tile_linear_kernel[grid](*tensors, *scalars, **consts,
                                                        num_warps=4, num_stages=4), calls)
    direct = per_call_us(lambda: triton_launch.launch(_tile_linear_kernel, grid, tensors,
                                                      scalars, consts, num_warps=4,
                                                      num_stages=4), calls)
    print(f"\none Triton launch: kernel[grid] {jit:.1f} µs, "
          f"triton_launch.launch {direct:.1f} µs")


if __name__ == "__main__":
    main()
