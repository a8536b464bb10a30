"""Kernel choice between the sm90 kernel's two epilogues for row-major layers with
pruned-away output features (round 20): row segments (``TileConfig.store`` empty, the
plan's default "span") against direct stores plus the pruned-feature launch
(``store="direct"``), both timed by :func:`dispatch.decide` with everything else.

Per shape (fp16, G = 128, 75% of K pruned per tile, ``--pruned`` of the output features
removed, GELU + bias, x row-major) it runs a forced decision and prints, in µs, the
dense time choice measured (its fastest dense variant, GELU included), the fastest
sm90 candidate of each epilogue (final-round median where it was a finalist, else its
screening time), the choice, and dense / chosen. The chosen path's output is checked
against a float32 reference first.

    PYTHONPATH=. python bench/probe_store_choice.py [--pruned 0.1] [--shapes 0,2]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from profile_host import make_layer   # bench/ is on sys.path as a script
from sparsefx.patterns.tile import unpack_tensors
from sparsefx.runtime.cuda import dispatch, register_cuda_kernels
from sparsefx.runtime.cuda.triton_tile import TileConfig
from sparsefx.runtime.ops import apply_activation

SHAPES = ((16384, 4096, 4096), (8192, 4096, 11008), (4096, 768, 3072), (4096, 3072, 768),
          (4096, 768, 768))


def label(cfg: TileConfig) -> str:
    if cfg.impl == "sm90":
        return f"sm90 {cfg.block_n}x{cfg.block_m} {cfg.store or 'default'}"
    return f"triton {cfg.block_n}x{cfg.block_m}x{cfg.block_k} flat{cfg.flat}"


def best_sm90(dec, store: str):
    times = [ms for c, ms in dec.candidates
             if c["impl"] == "sm90" and c.get("store", "") == store]
    return min(times) * 1e3 if times else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pruned", type=float, default=0.1)
    ap.add_argument("--shapes", default=",".join(map(str, range(len(SHAPES)))))
    args = ap.parse_args()
    assert register_cuda_kernels()
    gen = torch.Generator().manual_seed(0)
    print(f"# {torch.cuda.get_device_name()}, fp16, G=128, 75% per tile, {args.pruned:.0%} "
          "of the output features pruned, row-major, GELU + bias; µs as kernel choice "
          "timed them (CUDA graph replays)")
    print("| M×K→N | dense | sm90 row segments | sm90 direct + fill | chosen | "
          "chosen µs | dense/chosen | rel err |")
    print("|---|---|---|---|---|---|---|---|")
    for M, K, N in (SHAPES[int(i)] for i in args.shapes.split(",")):
        _, tensors = make_layer(M, K, N, 128, gen, args.pruned)
        b = (torch.randn(N, generator=gen) * 0.1).to("cuda", torch.float16)
        x = torch.randn(M, K, generator=gen).to("cuda", torch.float16)
        plan = dispatch.get_plan(tensors[2], tensors[3], N, 128)
        assert plan.sm90_store(False) == "span", plan.sm90_stores(False)
        dec = dispatch.decide(x, *tensors, b, N, "gelu", False, force=True)
        w = unpack_tensors(*tensors, N, K).float()
        ref = apply_activation(F.linear(x.float(), w, b.float()), "gelu")
        out = dispatch._run(dec, (x, *tensors, b, N, "gelu", False), plan)
        err = float((out.float() - ref).norm() / ref.norm())
        assert err < 3e-3, err
        chosen = "dense " + dec.dense_variant if dec.choice == "dense" else label(dec.config)
        chosen_ms = dec.dense_ms if dec.choice == "dense" else dec.sparse_ms
        print(f"| {M}×{K}→{N} | {dec.dense_ms * 1e3:.1f} | {best_sm90(dec, ''):.1f} | "
              f"{best_sm90(dec, 'direct'):.1f} | {chosen} | {chosen_ms * 1e3:.1f} | "
              f"{dec.dense_ms / chosen_ms:.2f} | {err:.1e} |", flush=True)


if __name__ == "__main__":
    main()
