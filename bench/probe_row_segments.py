"""Row-major layers on the sm90 tile kernel whose tiles bulk stores cannot write
(round 18): the row-segment epilogue (``TilePlan.sm90_store`` ``"span"``, which also
writes the pruned-away features) against the direct stores plus the separate write of
those features (``"direct"``: what ran before), and against the same shape with no
feature pruned (bulk stores) and dense ``F.linear``.

Per shape (fp16, G = 128, 75% of K pruned per tile, ``--pruned`` of the output features
removed by column pruning, GELU, bias, x row-major; dense is ``F.linear`` with the bias
and without the GELU), GPU µs replayed from a CUDA graph
(``dispatch._time_ms``, as kernel choice times), each the median of ``--rounds``
alternating rounds. Each path's output is first checked against a float32 reference
(dense matmul of the unpacked weight).

    PYTHONPATH=. python bench/probe_row_segments.py [--pruned 0.1] [--rounds 3] \
        [--lib variant.so] [--shapes 0,2]

``--lib``: time the kernels of another build of ``csrc/tile_linear_sm90.cu`` (a variant
of the epilogue, built with ``build.compile_flags``); fp16-only builds suffice.
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch
import torch.nn.functional as F

from profile_host import make_layer   # bench/ is on sys.path as a script
from profile_tile import use_variant_library
from sparsefx.patterns.tile import unpack_tensors
from sparsefx.runtime.cuda import dispatch, register_cuda_kernels
from sparsefx.runtime.cuda.triton_tile import TileConfig
from sparsefx.runtime.ops import apply_activation

SHAPES = ((16384, 4096, 4096), (8192, 4096, 11008), (4096, 768, 3072), (4096, 3072, 768))
CONFIGS = {"128x256": TileConfig(128, 256, 64, 12, 4, group_cb=32, flat=1, impl="sm90"),
           "128x128": TileConfig(128, 128, 64, 12, 6, group_cb=32, flat=1, impl="sm90")}


def check(out, ref, what):
    err = float((out.float() - ref).norm() / ref.norm())
    assert err < 3e-3, (what, err)
    return err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pruned", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lib", help="another build of the sm90 tile library")
    ap.add_argument("--shapes", default=",".join(map(str, range(len(SHAPES)))),
                    help="indices into SHAPES")
    args = ap.parse_args()
    assert register_cuda_kernels()
    if args.lib:
        use_variant_library(args.lib)
    gen = torch.Generator().manual_seed(0)
    print(f"# {torch.cuda.get_device_name()}, fp16, G=128, 75% per tile, {args.pruned:.0%} "
          "of the output features pruned, row-major, GELU + bias; GPU µs (CUDA graph), "
          f"median of {args.rounds} alternating rounds"
          + (f"; library {args.lib}" if args.lib else ""))
    print("| M×K→N | block | missing | dense F.linear | direct + fill | row segments "
          "| unpruned (bulk) | direct/segments | dense/segments | dense/unpruned | rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for M, K, N in (SHAPES[int(i)] for i in args.shapes.split(",")):
        _, pruned = make_layer(M, K, N, 128, gen, args.pruned)
        _, full = make_layer(M, K, N, 128, gen, 0.0)
        b = (torch.randn(N, generator=gen) * 0.1).to("cuda", torch.float16)
        x = torch.randn(M, K, generator=gen).to("cuda", torch.float16)
        w = unpack_tensors(*pruned, N, K).to(torch.float16)
        ref = apply_activation(F.linear(x.float(), w.float(), b.float()), "gelu")
        plan = dispatch.get_plan(pruned[2], pruned[3], N, 128)
        full_plan = dispatch.get_plan(full[2], full[3], N, 128)
        assert plan.sm90_store(False) == "span" and full_plan.sm90_store(False) == "bulk"
        layer_args = (x, *pruned, b, N, "gelu", False)
        full_args = (x, *full, b, N, "gelu", False)
        for name, cfg in CONFIGS.items():
            runs = {
                "dense": lambda: F.linear(x, w, b),
                "direct": lambda: dispatch.sparse_forward(*layer_args, plan,
                                                          replace(cfg, store="direct")),
                "span": lambda: dispatch.sparse_forward(*layer_args, plan, cfg),
                "bulk": lambda: dispatch.sparse_forward(*full_args, full_plan, cfg),
            }
            err = max(check(runs[k](), ref, k) for k in ("direct", "span"))
            times = {k: [] for k in runs}
            for r in range(args.rounds):
                order = list(runs) if r % 2 == 0 else list(reversed(runs))
                for k in order:
                    times[k].append(dispatch._time_ms(runs[k]) * 1e3)
            t = {k: statistics.median(v) for k, v in times.items()}
            print(f"| {M}×{K}→{N} | {name} | {plan.missing.numel()} | {t['dense']:.1f} | "
                  f"{t['direct']:.1f} | {t['span']:.1f} | {t['bulk']:.1f} | "
                  f"{t['direct'] / t['span']:.2f} | {t['dense'] / t['span']:.2f} | "
                  f"{t['dense'] / t['bulk']:.2f} | {err:.1e} |", flush=True)


if __name__ == "__main__":
    main()
