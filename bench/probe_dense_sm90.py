"""The CUTLASS dense feature-major GEMM (``runtime/cuda/sm90_dense.py``) against row-major
``F.linear`` (cuBLAS, bias fused) and the feature-major variants kernel choice already
times, at the bench_tile shapes (fp16, bias, CUDA-graph medians from
``dispatch._time_ms``, interleaved rounds; ratio = F.linear / variant, same process).
Every configuration is first checked against the float64 reference on a NaN-poisoned
output; a wrong one is reported and not timed.

    PYTHONPATH=. python bench/probe_dense_sm90.py [--rounds 3] [--shapes all|bert]
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from sparsefx.runtime.cuda import sm90_dense
from sparsefx.runtime.cuda.dispatch import _time_ms
from sparsefx.runtime.cuda.triton_dense import dense_configs, dense_fm_linear
from sparsefx.runtime.ops import apply_activation

SHAPES = [(4096, 768, 768), (4096, 768, 3072), (4096, 3072, 768), (16384, 4096, 4096),
          (8192, 4096, 11008), (16, 4096, 4096)]


def reference(x_fm, w, b, activation):
    y = w.double() @ x_fm.double()
    if b is not None:
        y = y + b.double()[:, None]
    return apply_activation(y, activation)


def rel_err(got, ref):
    return ((got.double() - ref).norm() / ref.norm()).item()


def check_all(shape, dtype, gen):
    """Every config, each activation, with and without bias, NaN-poisoned output."""
    M, K, N = shape
    w = (torch.randn(N, K, generator=gen) * K ** -0.5).to("cuda", dtype)
    b = torch.randn(N, generator=gen).to("cuda", dtype)
    x = torch.randn(K, M, generator=gen).to("cuda", dtype)
    worst = {}
    for name in sm90_dense.config_names():
        for act in ("none", "relu", "gelu", "silu"):
            for bias in (b, None):
                out = torch.full((N, M), float("nan"), dtype=dtype, device="cuda")
                sm90_dense.dense_fm_linear_sm90(x, w, bias, act, name, out=out)
                err = rel_err(out, reference(x, w, bias, act))
                worst[name] = max(worst.get(name, 0.0), err)
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shapes", default="all")
    args = ap.parse_args()
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}; "
          f"sm90 dense available: {sm90_dense.available()} ({sm90_dense.why_not()})")
    names = sm90_dense.config_names()
    print("# configs:", ", ".join(names))
    gen = torch.Generator().manual_seed(0)
    for shape, dtype in [((96, 200, 136), torch.float16), ((96, 200, 136), torch.bfloat16),
                         ((4104, 768, 776), torch.float16), ((8, 64, 8), torch.bfloat16)]:
        worst = check_all(shape, dtype, gen)
        print(f"check {shape} {dtype}: worst rel err per config "
              + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    shapes = SHAPES[:3] if args.shapes == "bert" else SHAPES
    print("\n| M×K→N | F.linear µs | best existing fm (µs, ratio) | "
          + " | ".join(names) + " | best sm90 ratio |")
    print("|---|---|---|" + "---|" * len(names) + "---|")
    for M, K, N in shapes:
        w = (torch.randn(N, K, generator=gen) * K ** -0.5).to("cuda", torch.float16)
        b = torch.randn(N, generator=gen).to("cuda", torch.float16)
        x_rm = torch.randn(M, K, generator=gen).to("cuda", torch.float16)
        x_fm = x_rm.t().contiguous()
        ref = reference(x_fm, w, b, "none")
        entries = {"F.linear": lambda: F.linear(x_rm, w, b),
                   "addmm": lambda: torch.addmm(b[:, None], w, x_fm)}
        for cfg in dense_configs(M):
            entries[cfg.name] = \
                lambda cfg=cfg: dense_fm_linear(x_fm, w, b, "none", cfg)
        for name in names:
            entries["sm90_" + name] = \
                lambda name=name: sm90_dense.dense_fm_linear_sm90(x_fm, w, b, "none", name)
        bad = {}
        for key, fn in entries.items():
            if key == "F.linear":
                continue
            err = rel_err(fn(), ref)
            if not err < 5e-3:
                bad[key] = err
        times = {k: [] for k in entries if k not in bad}
        for r in range(args.rounds):
            order = list(times) if r % 2 == 0 else list(reversed(list(times)))
            for key in order:
                times[key].append(_time_ms(entries[key]) * 1e3)
        med = {k: statistics.median(v) for k, v in times.items()}
        base = med["F.linear"]
        existing = {k: v for k, v in med.items() if not k.startswith("sm90_")
                    and k != "F.linear"}
        best_old = min(existing, key=existing.get)
        cells = []
        for name in names:
            key = "sm90_" + name
            cells.append(f"bad {bad[key]:.1e}" if key in bad
                         else f"{med[key]:.1f} ({base / med[key]:.2f})")
        sm90 = [med["sm90_" + n] for n in names if "sm90_" + n in med]
        best_sm90 = base / min(sm90) if sm90 else float("nan")
        print(f"| {M}×{K}→{N} | {base:.1f} | {best_old} {existing[best_old]:.1f} "
              f"({base / existing[best_old]:.2f}) | " + " | ".join(cells)
              + f" | {best_sm90:.2f} |", flush=True)


if __name__ == "__main__":
    main()
