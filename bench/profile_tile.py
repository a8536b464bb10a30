"""One tile_linear layer, run for a profiler or timed: the diagnosis tool behind
bench/NOTES_tile.md ("Round 4").

    python bench/profile_tile.py --impl sm90 --block 128x256 [--lib variant.so] --profile
    python bench/profile_tile.py --impl triton --cfg 128,128,64,8,4,32,2 --time
    python bench/profile_tile.py --impl dense --time

``--profile`` runs two warm-up launches, then exactly one launch between
``cudaProfilerStart``/``Stop`` (use ``ncu --profile-from-start off``). ``--time`` prints
the ``do_bench`` median. ``--lib`` loads a variant build of ``csrc/tile_linear_sm90.cu``
(e.g. one compiled with ``-DSFX_DIAG_NO_GATHER=1``) instead of the cached library; such
variants compute wrong results on purpose, so no check is made with ``--lib``.
Shapes: ``--mkn 16384,4096,4096``, ``--sparsity`` (every tile keeps the same number of
random rows; ``--uneven``: bench_tile's ±50% spread at the same mean), G = 128, fp16,
feature-major x [K, M] -> out [N, M]. ``--time --graph`` adds the CUDA-graph median.
Run from the repository root with ``PYTHONPATH=.``.
"""
from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from sparsefx.patterns.tile import unpack_tensors
from sparsefx.runtime.cuda import sm90_tile
from sparsefx.runtime.cuda.dispatch import sparse_forward
from sparsefx.runtime.cuda.plan import get_plan
from sparsefx.runtime.cuda.triton_tile import TileConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sm90 import G, packed_layer  # noqa: E402  (same layer builder as bench_sm90)
from bench_tile import kept_counts  # noqa: E402  (bench_tile's uneven density profile)

def use_variant_library(path: str) -> None:
    """Make sm90_tile launch the kernels of the shared library at ``path``."""
    lib = ctypes.CDLL(path)
    sm90_tile._configure(lib)
    sm90_tile.library = lambda: lib


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["sm90", "triton", "dense"], required=True)
    ap.add_argument("--mkn", default="16384,4096,4096")
    ap.add_argument("--sparsity", type=float, default=0.75)
    ap.add_argument("--uneven", action="store_true",
                    help="per-tile density spread ±50%% around the mean (bench_tile's profile)")
    ap.add_argument("--block", default="128x256", help="sm90 block_n x block_m")
    ap.add_argument("--cfg", default="128,128,64,8,4,32,2",
                    help="triton: block_n,block_m,block_k,warps,stages,group_cb,flat")
    ap.add_argument("--lib", default=None, help="sm90 variant library (.so)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--time", action="store_true")
    ap.add_argument("--graph", action="store_true",
                    help="with --time: also the CUDA-graph median, as kernel choice times it")
    ap.add_argument("--direct-store", action="store_true",
                    help="sm90: epilogue stores from registers, not bulk tensor stores")
    args = ap.parse_args()
    M, K, N = map(int, args.mkn.split(","))
    gen = torch.Generator().manual_seed(0)
    if args.uneven:
        keep = (kept_counts(-(-N // G), K, args.sparsity, True, gen) / K).tolist()
    else:
        keep = [1.0 - args.sparsity] * -(-N // G)      # every tile equally dense
    values, row_idx, row_ptr, col_map = packed_layer(N, K, keep, torch.float16, gen)
    x_fm = torch.randn(K, M, generator=gen).to("cuda", torch.float16)
    bias = (torch.randn(N, generator=gen) * 0.1).to("cuda", torch.float16)
    plan = get_plan(row_ptr, col_map, N, G)
    if args.lib:
        use_variant_library(args.lib)

    if args.impl == "dense":
        w = unpack_tensors(values, row_idx, row_ptr, col_map, N, K).contiguous()
        x_rm = x_fm.t().contiguous()

        def run():
            return F.linear(x_rm, w, bias)
        label = "dense cuBLAS F.linear (row-major)"
    else:
        if args.impl == "sm90":
            bn, bm = map(int, args.block.split("x"))
            cfg = TileConfig(bn, bm, 64, 4, 1, group_cb=32, flat=1, impl="sm90",
                             store="direct" if args.direct_store else "")
        else:
            bn, bm, bk, w_, st, gcb, flat = map(int, args.cfg.split(","))
            cfg = TileConfig(bn, bm, bk, w_, st, group_cb=gcb, flat=flat)
        out = torch.empty(N, M, dtype=torch.float16, device="cuda")

        def run():
            return sparse_forward(x_fm, values, row_idx, row_ptr, col_map, bias, N, "none",
                                  True, plan, cfg, out=out)
        label = f"{cfg.impl} {cfg.to_dict()}" + (f" lib={args.lib}" if args.lib else "") \
            + (" direct-store" if args.direct_store else "")
        if not args.lib:     # a shipped kernel must be right before it is worth timing
            w = unpack_tensors(values, row_idx, row_ptr, col_map, N, K).float()
            ref = w @ x_fm.float() + bias.float()[:, None]
            got = run().float()
            print(f"rel err {float((got - ref).norm() / ref.norm()):.2e}")
            del w, ref, got
    run()
    run()
    torch.cuda.synchronize()
    if args.profile:
        torch.cuda.cudart().cudaProfilerStart()
        run()
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
    if args.time:
        from triton.testing import do_bench
        ms = do_bench(run, warmup=10, rep=80, return_mode="median")
        tiles = "uneven" if args.uneven else "even"
        print(f"TIME {M}x{K}->{N} s{args.sparsity:g} {tiles} {label}: {ms * 1e3:.1f} us")
        if args.graph:
            from sparsefx.runtime.cuda.dispatch import _time_ms
            print(f"GRAPH {M}x{K}->{N} s{args.sparsity:g} {tiles} {label}: "
                  f"{_time_ms(run) * 1e3:.1f} us")


if __name__ == "__main__":
    main()
