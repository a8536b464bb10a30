"""Why do some eager `chosen` readings in bench_tile sit far above the same kernel's
`sparse` reading (RESULTS runs 9b-13, e.g. 4096x768->768 at 90%: 33 against 10 µs)?

For a few BERT-size feature-major layers this times, in alternating rounds, the direct
call (`dispatch.sparse_forward`) and the op (`torch.ops.sparsefx.tile_linear`, with and
without the replay of its launch) with bench_tile's timer (`do_bench`, L2 flushed before every call), and prints the L2
flush's own GPU time and each path's host µs per call. If the op's readings jump
between rounds while the direct call's do not, the jump is in the measurement's
interplay of host and GPU, not in the kernel.

    PYTHONPATH=. python bench/probe_eager_bimodal.py [--rounds 6]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tile import bench_ms, random_layer  # noqa: E402
from profile_host import per_call_us  # noqa: E402


def flush_us() -> float:
    import triton
    drv = triton.runtime.driver.active
    cache = drv.get_empty_cache_for_benchmark()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(20):
        start.record()
        drv.clear_cache(cache)
        end.record()
        torch.cuda.synchronize()
        ts.append(start.elapsed_time(end) * 1e3)
    return sorted(ts)[len(ts) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    from sparsefx.runtime.cuda import dispatch, register_cuda_kernels
    from sparsefx.runtime.cuda.plan import get_plan
    assert register_cuda_kernels()
    gen = torch.Generator().manual_seed(0)
    print(f"# {torch.cuda.get_device_name()}; L2 flush (do_bench's clear_cache) "
          f"{flush_us():.1f} µs GPU")
    print("| layer | path | host µs/call | do_bench µs per round |")
    print("|---|---|---|---|")
    for (M, K, N, sp) in [(4096, 768, 768, 0.75), (4096, 768, 768, 0.9),
                          (4096, 3072, 768, 0.5)]:
        W, packed, b, _ = random_layer(N, K, 128, sp, False, gen)
        x = torch.randn(K, M, device="cuda", dtype=torch.float16)
        a = (x, packed.values, packed.row_idx, packed.row_ptr, packed.col_map, b, N,
             "none", True)
        dec = dispatch.decide(*a, force=True)
        plan = get_plan(packed.row_ptr, packed.col_map, N, 128)
        op = lambda: torch.ops.sparsefx.tile_linear(*a)  # noqa: E731
        paths = {"sparse_forward": lambda: dispatch.sparse_forward(*a, plan, dec.config),
                 "op (replayed)": op, "op, no replay": op}
        reads = {name: [] for name in paths}
        hosts = {}
        for r in range(args.rounds + 1):
            for name, fn in paths.items():
                with replay_off(dispatch, name == "op, no replay"):
                    if r == args.rounds:
                        hosts[name] = per_call_us(fn, 2000)
                    else:
                        reads[name].append(bench_ms(fn) * 1e3)
        for name in paths:
            print(f"| {M}x{K}->{N} {sp:.2f} ({dec.choice}) | {name} | {hosts[name]:.1f} | "
                  + " ".join(f"{r:.1f}" for r in reads[name]) + " |", flush=True)


@contextlib.contextmanager
def replay_off(dispatch, off: bool):
    """Within the block, the op runs without the replay of its launch when ``off``."""
    if not off:
        yield
        return
    dispatch._runners.clear()
    make_runner, dispatch._eager_runner = dispatch._eager_runner, lambda *a: None
    try:
        yield
    finally:
        dispatch._eager_runner = make_runner
        dispatch._runners.clear()


if __name__ == "__main__":
    main()
