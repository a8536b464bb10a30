"""Split-K sweep of the Triton grid kernel (TileConfig.split): CUDA-graph time of each
config next to dense cuBLAS (``F.linear``) on the same case, after checking every
config against the float64 reference into a NaN-poisoned output, three launches in a
row (the counters must be back at 0 after each).

    python bench/probe_split.py                 # BERT shapes and M = 16
    python bench/probe_split.py --shapes small --sparsity 0.75

Prints a markdown table per case (µs, graph medians, best of two interleaved rounds)
and the registers of each compiled kernel variant.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tile import SHAPES, random_layer  # noqa: E402
from sparsefx.patterns.tile import unpack  # noqa: E402

ROUNDS = 2


def configs_for(M: int, small_splits=(2, 4, 8)):
    from sparsefx.runtime.cuda.triton_tile import TileConfig as C
    if M <= 64:
        bases = [C(64, 16, 128, 4, 4), C(32, 16, 128, 4, 4), C(64, 16, 64, 4, 4)]
        splits = small_splits
    elif M <= 1024:
        bases = [C(64, 64, 64, 4, 4), C(128, 64, 64, 4, 4), C(64, 128, 64, 4, 4)]
        splits = (2, 4)
    else:
        bases = [C(128, 128, 64, 8, 3), C(128, 128, 64, 4, 4), C(64, 128, 64, 4, 4)]
        splits = (1, 2, 3)
    out = list(bases)
    for b in bases:
        out += [C(b.block_n, b.block_m, b.block_k, b.num_warps, b.num_stages, b.group_cb,
                  split=s) for s in splits]
    if M > 1024:
        out.append(C(128, 128, 64, 8, 3, group_cb=32, flat=2))
    elif M > 64:
        out.append(C(64, 64, 64, 4, 4, flat=4))
    return out


def check(args, plan, cfg, packed, x_rm, b, feature_major) -> float:
    from sparsefx.runtime.cuda import dispatch
    ref = F.linear(x_rm.double(), unpack(packed).double(), b.double())
    ref = ref.t() if feature_major else ref
    worst = 0.0
    for _ in range(3):
        out = torch.full(ref.shape, float("nan"), dtype=x_rm.dtype, device=x_rm.device)
        dispatch.sparse_forward(*args, plan, cfg, out=out)
        err = float((out.double() - ref).norm() / ref.norm())
        assert err == err and err < 5e-3, (cfg, err)
        worst = max(worst, err)
    return worst


def run_case(M, K, N, G, sparsity, uneven, gen, dtype=torch.float16, small_splits=(2, 4, 8)):
    from sparsefx.runtime.cuda import dispatch
    from sparsefx.runtime.cuda.plan import get_plan
    W, packed, b, _ = random_layer(N, K, G, sparsity, uneven, gen, dtype)
    x_rm = torch.randn(M, K, device="cuda", dtype=dtype)
    x = x_rm.t().contiguous()
    args = (x, packed.values, packed.row_idx, packed.row_ptr, packed.col_map, b, N, "none",
            True)
    plan = get_plan(packed.row_ptr, packed.col_map, N, G)
    cfgs = configs_for(M, small_splits)
    for cfg in cfgs:
        check(args, plan, cfg, packed, x_rm, b, True)
    dense = float("inf")
    times = {c: float("inf") for c in cfgs}
    for _ in range(ROUNDS):
        dense = min(dense, dispatch._time_ms(lambda: F.linear(x_rm, W, b)))
        for cfg in cfgs:
            times[cfg] = min(times[cfg], dispatch._time_ms(
                lambda: dispatch.sparse_forward(*args, plan, cfg)))
    return dense, times, plan


def label(c) -> str:
    return (f"{c.block_n}x{c.block_m}x{c.block_k}/w{c.num_warps}s{c.num_stages}"
            + (f"/flat{c.flat}" if c.flat else "") + (f"/split{c.split}" if c.split else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="bert,small")
    ap.add_argument("--sparsity", default="0.75,0.9")
    ap.add_argument("--shape", action="append", default=[],
                    help="extra MxKxN shape(s), e.g. 256x768x768")
    ap.add_argument("--small-splits", default="2,4,8",
                    help="split counts tried for M <= 64")
    args = ap.parse_args()
    SHAPES["extra"] = [tuple(int(v) for v in s.split("x")) for s in args.shape]
    if args.shape:
        args.shapes += ",extra"
    from sparsefx.runtime.cuda import register_cuda_kernels
    assert register_cuda_kernels()
    gen = torch.Generator().manual_seed(0)
    print(f"# {torch.cuda.get_device_name()}")
    for group in filter(None, args.shapes.split(",")):
        for (M, K, N) in SHAPES[group]:
            sps = [float(s) for s in args.sparsity.split(",")]
            if M <= 64:
                sps = [0.0] + sps
            for sp in sps:
                for uneven in ((False,) if sp == 0 else (False, True)):
                    dense, times, plan = run_case(
                        M, K, N, 128, sp, uneven, gen,
                        small_splits=tuple(int(v) for v in args.small_splits.split(",")))
                    best = min(times, key=times.get)
                    print(f"\n## {M}x{K}->{N} {sp:.2f} {'uneven' if uneven else 'even'} "
                          f"k_t max/mean {plan.max_k}/{plan.mean_k:.0f}: dense "
                          f"{dense * 1e3:.1f} us, best {label(best)} "
                          f"{times[best] * 1e3:.1f} us ({dense / times[best]:.2f}x)")
                    print("| config | us | dense/config |\n|---|---|---|")
                    for c, ms in sorted(times.items(), key=lambda kv: kv[1]):
                        print(f"| {label(c)} | {ms * 1e3:.1f} | {dense / ms:.2f}x |")
    from sparsefx.runtime.cuda import triton_launch
    regs = set()
    for entry in triton_launch._compiled.values():
        if entry is not None:
            k, tail = entry
            try:
                k._init_handles()
            except Exception:  # noqa: BLE001 - older/newer triton: report what exists
                pass
            regs.add((k.name, getattr(k, "n_regs", None), getattr(k, "n_spills", None),
                      tail))
    print("\n# kernels (name, registers, spills, constexprs)")
    for r in sorted(regs, key=str):
        print("#", r)


if __name__ == "__main__":
    main()
