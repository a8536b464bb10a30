"""Benchmark: dense cuBLAS vs the best Triton tile config vs the sm90 CUDA C++ kernel.

For each shape (M x K -> N) and sparsity (G = 128, every tile keeps the same number of
input rows, chosen at random per tile; plus one uneven case) it builds packed weights on
the GPU, checks the sm90 kernel against an fp32 dense reference (rel err, NaN-poisoned
output), and times with ``triton.testing.do_bench`` (median, ms):

* dense: ``F.linear`` on the dense masked fp16 weight (row-major x [M, K]);
* triton: the best of a shortlist of Triton configs (the winners of the earlier sweeps,
  bench/NOTES_tile.md), feature-major x [K, M] -> out [N, M];
* sm90: each sm90 config (cooperative 128x256, ping-pong 128x128), same layout.

Prints a table and writes ``$OUT/bench_sm90.json`` (or ./bench_sm90.json).
Run from the repository root with ``PYTHONPATH=.``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from sparsefx.patterns.tile import unpack_tensors
from sparsefx.runtime.cuda import sm90_tile
from sparsefx.runtime.cuda.dispatch import candidate_configs, sm90_configs, sparse_forward
from sparsefx.runtime.cuda.plan import get_plan
from sparsefx.runtime.cuda.triton_tile import TileConfig

SHAPES = [(4096, 768, 768), (4096, 768, 3072), (4096, 3072, 768),
          (16384, 4096, 4096), (8192, 4096, 11008), (16, 4096, 4096)]
SPARSITIES = [0.0, 0.5, 0.75, 0.9]
G = 128
TRITON_LARGE = [TileConfig(128, 256, 64, 8, 3, group_cb=32),
                TileConfig(128, 128, 64, 8, 3, group_cb=32, flat=2),
                TileConfig(128, 128, 64, 8, 4, group_cb=32, flat=2),
                TileConfig(128, 128, 64, 4, 4),
                TileConfig(64, 128, 64, 4, 4, flat=3)]


def packed_layer(N, K, keep_fracs, dtype, gen):
    """Packed tensors on the GPU: tile t keeps round(keep_fracs[t] * K) random rows."""
    T = -(-N // G)
    rows, counts = [], []
    for t in range(T):
        k = int(round(float(keep_fracs[t]) * K))
        idx = torch.sort(torch.randperm(K, generator=gen)[:k]).values
        rows.append(idx)
        counts.append(k)
    row_idx = torch.cat(rows).to(torch.int32).cuda()
    row_ptr = torch.tensor([0] + counts).cumsum(0).to(torch.int32).cuda()
    values = (torch.randn(int(row_ptr[-1]), G, generator=gen) * K ** -0.5).to("cuda", dtype)
    col_map = torch.arange(N, dtype=torch.int32, device="cuda")
    return values, row_idx, row_ptr, col_map


def bench(fn):
    return float(do_bench(fn, warmup=10, rep=60, return_mode="median"))


def run_case(M, K, N, keep_fracs, label, sm90_ok, triton_cfgs, gen):
    dtype = torch.float16
    values, row_idx, row_ptr, col_map = packed_layer(N, K, keep_fracs, dtype, gen)
    w = unpack_tensors(values, row_idx, row_ptr, col_map, N, K).contiguous()
    bias = (torch.randn(N, generator=gen) * 0.1).to("cuda", dtype)
    x_rm = torch.randn(M, K, generator=gen).to("cuda", dtype)
    x_fm = x_rm.t().contiguous()
    plan = get_plan(row_ptr, col_map, N, G)
    rec = {"M": M, "K": K, "N": N, "case": label, "mean_keep": float(sum(keep_fracs) /
                                                                    len(keep_fracs))}
    rec["dense_ms"] = bench(lambda: F.linear(x_rm, w, bias))
    ref = (w.float() @ x_fm.float()) + bias.float()[:, None]

    def sparse(cfg, out=None):
        return sparse_forward(x_fm, values, row_idx, row_ptr, col_map, bias, N, "none",
                              True, plan, cfg, out=out)

    def check(cfg):
        out = torch.full((N, M), float("nan"), dtype=dtype, device="cuda")
        sparse(cfg, out)
        torch.cuda.synchronize()
        if torch.isnan(out).any():
            return float("nan")
        return float((out.float() - ref).norm() / ref.norm())

    tri = {}
    for cfg in triton_cfgs:
        try:
            tri[str(cfg.to_dict())] = bench(lambda: sparse(cfg))
        except Exception as exc:       # noqa: BLE001 - e.g. out of resources
            print(f"  triton {cfg}: {type(exc).__name__}: {exc}", file=sys.stderr)
    rec["triton"] = tri
    rec["triton_ms"] = min(tri.values()) if tri else None
    s90 = {}
    if sm90_ok:
        for cfg in sm90_configs(max(M, 65), G):
            name = f"{cfg.impl}_{cfg.block_n}x{cfg.block_m}"
            err = check(cfg)
            s90[name] = {"rel_err": err, "ms": bench(lambda: sparse(cfg))}
    rec["sm90"] = s90
    good = [v["ms"] for v in s90.values() if v["rel_err"] <= 2e-3]
    rec["sm90_ms"] = min(good) if good else None
    rec["sm90_correct"] = all(v["rel_err"] <= 2e-3 for v in s90.values()) and bool(s90)
    return rec


def smoke(gen):
    """One launch of each sm90 config per shape, synchronised and printed before the
    next, so that a hang or a fault names its case (run under ``timeout``)."""
    for (M, K, N, s) in [(4096, 768, 3072, 0.75), (1024, 4096, 4096, 0.0),
                         (4096, 4096, 4096, 0.0), (16384, 4096, 4096, 0.75),
                         (16384, 4096, 4096, 0.0)]:
        values, row_idx, row_ptr, col_map = packed_layer(N, K, [1 - s] * (-(-N // G)),
                                                         torch.float16, gen)
        x = torch.randn(K, M, generator=gen).to("cuda", torch.float16)
        plan = get_plan(row_ptr, col_map, N, G)
        for cfg in sm90_configs(M, G):
            print(f"smoke {M}x{K}->{N} s{s} {cfg.impl} {cfg.block_n}x{cfg.block_m} ...", end=" ",
                  flush=True)
            for _ in range(2):
                t = time.time()
                sparse_forward(x, values, row_idx, row_ptr, col_map, None, N, "none", True,
                               plan, cfg)
                torch.cuda.synchronize()
            print(f"{(time.time() - t) * 1e3:.2f} ms (host clock, 2nd launch)", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="one launch per case, then exit")
    ap.add_argument("--quick", action="store_true",
                    help="only the two large shapes and 4096x768->3072 at 75%%")
    args = ap.parse_args()
    out_dir = os.environ.get("OUT", ".")
    gen = torch.Generator().manual_seed(0)
    sm90_ok = sm90_tile.available()
    print(f"GPU: {torch.cuda.get_device_name()}  sm90 library: "
          f"{'loaded' if sm90_ok else sm90_tile.why_not()}", flush=True)
    if args.smoke:
        smoke(gen)
        return
    results = []
    cases = []
    for (M, K, N) in SHAPES:
        for s in SPARSITIES:
            if args.quick and M < 8192 and (K, N, s) != (768, 3072, 0.75):
                continue
            T = -(-N // G)
            cases.append((M, K, N, [1.0 - s] * T, f"s{s:g}"))
    # uneven per-tile density, mean keep 0.25 (75% sparse on average)
    T = 4096 // G
    fr = torch.linspace(0.05, 0.45, T)[torch.randperm(T, generator=gen)].tolist()
    cases.append((16384, 4096, 4096, fr, "uneven75"))
    t0 = time.time()
    for (M, K, N, fracs, label) in cases:
        tcfgs = TRITON_LARGE if M > 64 else \
            [c for c in candidate_configs(M, G, True) if c.impl == "triton"]
        rec = run_case(M, K, N, fracs, label, sm90_ok, tcfgs, gen)
        results.append(rec)
        s90 = ", ".join(f"{k} {v['ms'] * 1e3:.1f} us (err {v['rel_err']:.1e})"
                        for k, v in rec["sm90"].items())
        print(f"{M}x{K}->{N} {label}: dense {rec['dense_ms'] * 1e3:.1f} us, triton "
              f"{(rec['triton_ms'] or float('nan')) * 1e3:.1f} us, {s90}"
              f"  [{time.time() - t0:.0f}s]", flush=True)
        torch.cuda.empty_cache()
        with open(os.path.join(out_dir, "bench_sm90.json"), "w") as f:   # after each case
            json.dump({"gpu": torch.cuda.get_device_name(),
                       "date": time.strftime("%Y-%m-%d"), "results": results}, f, indent=1)
    print("\n| shape | case | dense µs | triton µs | sm90 µs | dense/triton | dense/sm90 |"
          " triton/sm90 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        d, t, s = r["dense_ms"], r["triton_ms"], r["sm90_ms"]
        f = (lambda v: f"{v * 1e3:.1f}" if v else "–")
        g = (lambda a, b: f"{a / b:.2f}" if a and b else "–")
        print(f"| {r['M']}×{r['K']}→{r['N']} | {r['case']} | {f(d)} | {f(t)} | {f(s)}"
              f"{'' if r['sm90_correct'] or not sm90_ok else ' (WRONG)'} | {g(d, t)} | "
              f"{g(d, s)} | {g(t, s)} |")


if __name__ == "__main__":
    main()
