"""What the fused activation costs the tile kernels (round 19).

Per shape, per kernel (the sm90 cooperative 128x256 and ping-pong 128x128 kernels, and
the Triton grid kernel 128x128x64 that kernel choice keeps at BERT shapes), the layer
with each epilogue activation (none, relu, gelu, silu) and a bias; dense ``F.linear``
with the bias, alone and followed by PyTorch's separate activation kernel, as a layer
that is not fused would run. fp16, G = 128, 75% per tile, no pruned-away features,
feature-major x (no transpose in the sparse times), random data. GPU µs replayed from a
CUDA graph (``dispatch._time_ms``, as kernel choice times), each the median of
``--rounds`` alternating rounds. Every sparse output is first checked against a float32
reference of the same activation.

Run it on two checkouts in one device call to compare kernel versions (the import
path decides which ``sparsefx`` runs):

    PYTHONPATH=. python bench/probe_activation_cost.py [--rounds 3] [--shapes 0,1] \
        [--acts none,gelu] [--row-major]

``--row-major``: x [M, K] and out [M, N], so every sparse time includes the Triton
transpose of x that the dispatcher runs first.
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from profile_host import make_layer   # bench/ is on sys.path as a script
from sparsefx.patterns.tile import unpack_tensors
from sparsefx.runtime.cuda import dispatch, register_cuda_kernels
from sparsefx.runtime.cuda.triton_tile import TileConfig
from sparsefx.runtime.ops import apply_activation

SHAPES = ((4096, 768, 3072), (4096, 3072, 768), (4096, 768, 768), (16384, 4096, 4096))
CONFIGS = {"sm90 128x256": TileConfig(128, 256, 64, 12, 4, group_cb=32, flat=1, impl="sm90"),
           "sm90 128x128": TileConfig(128, 128, 64, 12, 6, group_cb=32, flat=1, impl="sm90"),
           "triton 128x128": TileConfig(128, 128, 64, 8, 3, group_cb=8)}
ACTS = ("none", "relu", "gelu", "silu")


def rel_err(out, ref):
    return float((out.float() - ref).norm() / ref.norm())


def median_times(runs, rounds):
    times = {k: [] for k in runs}
    for r in range(rounds):
        for k in (list(runs) if r % 2 == 0 else list(reversed(runs))):
            times[k].append(dispatch._time_ms(runs[k]) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shapes", default=",".join(map(str, range(len(SHAPES)))),
                    help="indices into SHAPES")
    ap.add_argument("--acts", default=",".join(ACTS), help="a subset of " + ",".join(ACTS))
    ap.add_argument("--row-major", action="store_true")
    args = ap.parse_args()
    acts = args.acts.split(",")
    fm = not args.row_major
    assert register_cuda_kernels()
    import sparsefx
    gen = torch.Generator().manual_seed(0)
    print(f"# {torch.cuda.get_device_name()}, sparsefx from {sparsefx.__file__}; fp16, "
          f"G=128, 75% per tile, {'feature' if fm else 'row'}-major, bias; GPU µs (CUDA graph), median of "
          f"{args.rounds} alternating rounds")
    print("| M×K→N | kernel | " + " | ".join(acts) + " | max rel err |")
    print("|---|---|" + "---|" * (len(acts) + 1))
    for M, K, N in (SHAPES[int(i)] for i in args.shapes.split(",")):
        packed, tensors = make_layer(M, K, N, 128, gen)
        b = (torch.randn(N, generator=gen) * 0.5).to("cuda", torch.float16)
        x_rm = torch.randn(M, K, generator=gen).to("cuda", torch.float16)
        x = x_rm.t().contiguous()
        w = unpack_tensors(*tensors, N, K).to(torch.float16)
        lin = F.linear(x_rm.float(), w.float(), b.float())
        lin = lin.t() if fm else lin
        plan = dispatch.get_plan(tensors[2], tensors[3], N, 128)
        dense = {"dense": lambda: F.linear(x_rm, w, b),
                 "dense+gelu": lambda: F.gelu(F.linear(x_rm, w, b)),
                 "dense+silu": lambda: F.silu(F.linear(x_rm, w, b))}
        for name, cfg in CONFIGS.items():
            runs, err = {}, 0.0
            for act in acts:
                call = (lambda act=act: dispatch.sparse_forward(x if fm else x_rm, *tensors,
                                                                b, N, act, fm, plan, cfg))
                err = max(err, rel_err(call(), apply_activation(lin, act)))
                runs[act] = call
            t = median_times({**runs, **dense}, args.rounds)
            print(f"| {M}×{K}→{N} | {name} | " + " | ".join(f"{t[a]:.1f}" for a in acts)
                  + f" | {err:.1e} |", flush=True)
        print(f"| {M}×{K}→{N} | dense F.linear, + F.gelu, + F.silu | {t['dense']:.1f}, "
              f"{t['dense+gelu']:.1f}, {t['dense+silu']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
