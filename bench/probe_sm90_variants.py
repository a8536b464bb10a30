"""Leave-one-out builds of the sm90 tile kernel against the shipped one, per block
shape, in one process (bench/NOTES_tile.md rounds 4 and 23).

Each variant library is ``csrc/tile_linear_sm90.cu`` compiled with one
``-DSFX_DIAG_*=1`` switch (no epilogue, no x gather, no wgmma, no weight loads). Its
results are wrong on purpose, so only the shipped library's output is checked (float64
reference, NaN-poisoned output). A variant's time shows what the removed stage costs.
Times are CUDA-graph medians (``dispatch._time_ms``), best of ``rounds`` rotating
rounds over the libraries. fp16, G = 128, feature-major, bias.

    PYTHONPATH=. python bench/probe_sm90_variants.py --lib NO_GATHER=.gl/diag/NO_GATHER.so \\
        [--lib ...] [--mkn 16384,4096,4096] [--sparsity 0.5,0.75,0.9] [--blocks 256,384]
"""
from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import torch

from sparsefx.patterns.tile import unpack_tensors
from sparsefx.runtime.cuda import sm90_tile
from sparsefx.runtime.cuda.dispatch import _time_ms, sparse_forward
from sparsefx.runtime.cuda.plan import get_plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sm90 import G, packed_layer  # noqa: E402
from probe_block384 import sm90_config  # noqa: E402


def load_variant(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    sm90_tile._configure(lib)
    return lib


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", action="append", default=[], help="NAME=path.so")
    ap.add_argument("--mkn", default="16384,4096,4096")
    ap.add_argument("--sparsity", default="0.5,0.75,0.9")
    ap.add_argument("--blocks", default="256,384")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    shipped = sm90_tile.library()
    if shipped is None:
        sys.exit(f"sm90 library unavailable: {sm90_tile.why_not()}")
    libs = {"shipped": shipped}
    libs.update({n: load_variant(p) for n, p in (a.split("=", 1) for a in args.lib)})
    M, K, N = map(int, args.mkn.split(","))
    gen = torch.Generator().manual_seed(4)
    print(f"GPU {torch.cuda.get_device_name()}, {M}x{K}->{N}, fp16, G = {G}, "
          f"graph µs (best of {args.rounds} rounds)")
    print("| sparsity | block | " + " | ".join(libs) + " | rel err (shipped) |")
    print("|---|---|" + "---|" * len(libs) + "---|")
    for s in map(float, args.sparsity.split(",")):
        keep = [1.0 - s] * -(-N // G)
        values, row_idx, row_ptr, col_map = packed_layer(N, K, keep, torch.float16, gen)
        x = torch.randn(K, M, generator=gen).to("cuda", torch.float16)
        bias = (torch.randn(N, generator=gen) * 0.1).to("cuda", torch.float16)
        plan = get_plan(row_ptr, col_map, N, G)
        ref = (unpack_tensors(values, row_idx, row_ptr, col_map, N, K).double()
               @ x.double() + bias.double()[:, None])
        out = torch.empty(N, M, dtype=torch.float16, device="cuda")
        for bm in map(int, args.blocks.split(",")):
            cfg = sm90_config(bm)

            def run():
                return sparse_forward(x, values, row_idx, row_ptr, col_map, bias, N,
                                      "none", True, plan, cfg, out=out)
            sm90_tile.library = lambda: shipped
            out.fill_(float("nan"))
            err = float((run().double() - ref).norm() / ref.norm())
            names = list(libs)
            best = {n: float("inf") for n in names}
            for r in range(args.rounds):
                for n in names[r % len(names):] + names[:r % len(names)]:
                    sm90_tile.library = (lambda lib=libs[n]: lib)
                    best[n] = min(best[n], _time_ms(run) * 1e3)
            sm90_tile.library = lambda: shipped
            print(f"| {s:.2f} | 128x{bm} | " + " | ".join(f"{best[n]:.1f}" for n in names)
                  + f" | {err:.1e} |", flush=True)
        del ref


if __name__ == "__main__":
    main()
