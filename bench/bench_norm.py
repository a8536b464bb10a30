"""Benchmark ``sparsefx::bias_residual_layernorm``: CUDA C++ vs Triton vs eager PyTorch.

For each fp16 shape (tokens M x features N) and layout (in -> out: row = [M, N],
fm = feature-major [N, M]; the mixed ones only exist for the C++ kernel and eager):

* cpp    ``norm_cuda.bias_residual_layernorm_cuda`` (the kernel this repo builds);
* triton ``norm_triton.bias_residual_layernorm_triton`` (same-layout cases only);
* eager  unfused PyTorch: ``F.layer_norm(x + bias + residual)`` for row-major, the
         transpose-based reference for feature-major, plus ``.t().contiguous()`` for the
         mixed layouts.

Two timings per case: ``triton.testing.do_bench`` median (L2 flushed before every run)
and CUDA-graph replay (16 calls per graph over 8 rotating input sets, so the data never
sits in L2; median of 20 replays / 16). Bytes = read x + residual, write y (the [N]
vectors are noise); the floor is bytes / 4.3 TB/s (the device-to-device copy measured on
an H200 here, re-measured below). Prints a table; writes ``$OUT/bench_norm.json``.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402

from sparsefx.runtime import norm_cuda, norm_ops  # noqa: E402
from sparsefx.runtime.norm_triton import bias_residual_layernorm_triton  # noqa: E402

PEAK_GBS = 4300.0
SHAPES = [(4096, 768), (4096, 1024), (50176, 768)]          # (tokens M, features N)
LAYOUTS = [("row", "row"), ("fm", "fm"), ("fm", "row"), ("row", "fm")]
EPS = 1e-5


def impls(in_fm: bool, out_fm: bool):
    def cpp(x, r, b, w, lb):
        return norm_cuda.bias_residual_layernorm_cuda(x, r, b, w, lb, EPS, in_fm, out_fm)

    def eager(x, r, b, w, lb):
        if in_fm:
            y = norm_ops.reference(x, r, b, w, lb, EPS, True)
            return y if out_fm else y.t().contiguous()
        y = F.layer_norm(x + b + r, [x.shape[-1]], w, lb, EPS)
        return y.t().contiguous() if out_fm else y

    out = {"cpp": cpp, "eager": eager}
    if in_fm == out_fm:
        out["triton"] = lambda x, r, b, w, lb: bias_residual_layernorm_triton(
            x, r, b, w, lb, EPS, in_fm)
    return out


def input_sets(m, n, in_fm, k):
    shape = (n, m) if in_fm else (m, n)
    sets = []
    for _ in range(k):
        x = (torch.randn(shape, device="cuda") * 3 + 5).half()
        r = (torch.randn(shape, device="cuda") * 3 + 5).half()
        b, w, lb = (torch.randn(n, device="cuda").half() for _ in range(3))
        sets.append((x, r, b, w, lb))
    return sets


def time_graph(fn, sets, calls=16, replays=20):
    """Per-call µs from CUDA-graph replay, rotating over the input sets."""
    for s in sets[:2]:
        fn(*s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            fn(*sets[i % len(sets)])
    g.replay()
    torch.cuda.synchronize()
    times = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(replays):
        start.record()
        g.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    del g
    return statistics.median(times)


def copy_bandwidth():
    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = triton.testing.do_bench(lambda: b.copy_(a), warmup=25, rep=200, return_mode="median")
    return 2 * a.numel() / (ms * 1e-3) / 1e9


def main():
    torch.manual_seed(0)
    lib = norm_cuda.load_library()
    dev = torch.cuda.get_device_name()
    print(f"device: {dev}; C++ kernel: {'loaded' if lib else norm_cuda.why_not()}")
    copy_gbs = copy_bandwidth()
    print(f"device-to-device copy: {copy_gbs:.0f} GB/s (read + write)")
    rows = []
    for m, n in SHAPES:
        nbytes = 3 * m * n * 2
        floor_us = nbytes / (PEAK_GBS * 1e9) * 1e6
        for lin, lout in LAYOUTS:
            in_fm, out_fm = lin == "fm", lout == "fm"
            k = max(2, min(8, int(2 * 60e6 // nbytes) + 1))   # rotate past the 60 MB L2
            sets = input_sets(m, n, in_fm, k)
            for name, fn in impls(in_fm, out_fm).items():
                if name == "cpp" and lib is None:
                    continue
                x, r, b, w, lb = sets[0]
                try:
                    ms = triton.testing.do_bench(lambda: fn(x, r, b, w, lb), warmup=25,
                                                 rep=100, return_mode="median")
                    us = ms * 1e3
                    g_us = time_graph(fn, sets)
                except Exception as exc:   # report and go on with the other cases
                    print(f"  {m}x{n} {lin}->{lout} {name} failed: {exc}")
                    continue
                row = dict(tokens=m, features=n, layout=f"{lin}->{lout}", impl=name,
                           us=us, graph_us=g_us, bytes=nbytes, floor_us=floor_us,
                           gbs=nbytes / (us * 1e-6) / 1e9,
                           graph_gbs=nbytes / (g_us * 1e-6) / 1e9,
                           frac=nbytes / (us * 1e-6) / 1e9 / PEAK_GBS,
                           graph_frac=nbytes / (g_us * 1e-6) / 1e9 / PEAK_GBS)
                rows.append(row)
            del sets
            torch.cuda.empty_cache()
    hdr = (f"{'M x N':>12} {'layout':>9} {'impl':>6} {'do_bench us':>11} {'GB/s':>6} "
           f"{'frac':>5} {'graph us':>9} {'GB/s':>6} {'frac':>5} {'floor us':>8}")
    print(hdr)
    for r in rows:
        print(f"{r['tokens']:>6}x{r['features']:<5} {r['layout']:>9} {r['impl']:>6} "
              f"{r['us']:>11.2f} {r['gbs']:>6.0f} {r['frac']:>5.2f} {r['graph_us']:>9.2f} "
              f"{r['graph_gbs']:>6.0f} {r['graph_frac']:>5.2f} {r['floor_us']:>8.2f}")
    out_dir = os.environ.get("OUT")
    if out_dir:
        meta = dict(device=dev, date=time.strftime("%Y-%m-%d"), copy_gbs=copy_gbs,
                    peak_gbs=PEAK_GBS, torch=torch.__version__, triton=triton.__version__)
        Path(out_dir, "bench_norm.json").write_text(json.dumps(dict(meta=meta, rows=rows),
                                                               indent=1))


if __name__ == "__main__":
    main()
