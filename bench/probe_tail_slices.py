"""Does skipping the zero rows of an item's last K-step pay? A probe (round 12).

The sm90 kernel ran all four 16-row wgmma slices of every K-step, also in an item's
last step, where rows past the tile's kept count are zeros (at 90% of K = 4096, 410
kept rows = 6 full steps + 26 rows: 2 of the last step's 4 slices are zeros, 7% of the
item's MMAs). Under sustained load the board power limit sets the clock
(bench/probe_clocks.py), so MMAs on zeros cost time even where the kernel is not
MMA-bound. The new kernel predicates those slices off.

Loads two builds of the library — ``OLD`` (before) and ``NEW`` (the checkout's source) —
checks that they agree bit for bit and against an fp32 reference, and times each under
CUDA graphs: ``dispatch._time_ms`` in alternating rounds (short bursts), then 2 s of
back-to-back replays each with ``nvidia-smi`` sampling the clock and power.

    PYTHONPATH=. python bench/probe_tail_slices.py .gl/exp/sm90_old.so .gl/exp/sm90_full.so
"""
from __future__ import annotations

import ctypes
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tile import random_layer  # noqa: E402
from probe_clocks import Sampler, graph_of, run_for  # noqa: E402
from sparsefx.patterns.tile import unpack  # noqa: E402
from sparsefx.runtime.cuda import dispatch, register_cuda_kernels, sm90_tile  # noqa: E402
from sparsefx.runtime.cuda.plan import get_plan  # noqa: E402
from sparsefx.runtime.cuda.triton_tile import TileConfig  # noqa: E402

CASES = [(16384, 4096, 4096, 0.9, False), (16384, 4096, 4096, 0.9, True),
         (8192, 4096, 11008, 0.9, False), (16384, 4096, 4096, 0.75, True),
         (4096, 768, 3072, 0.75, True), (4096, 3072, 768, 0.9, True)]
CONFIGS = [TileConfig(128, 256, 64, 12, 4, group_cb=32, flat=1, impl="sm90"),
           TileConfig(128, 128, 64, 12, 6, group_cb=32, flat=1, impl="sm90")]


def load(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(Path(path).resolve()))
    sm90_tile._configure(lib)
    return lib


def use(lib: ctypes.CDLL) -> None:
    sm90_tile.library = lambda: lib


def main(old_path: str, new_path: str) -> None:
    assert register_cuda_kernels()
    libs = {"old": load(old_path), "new": load(new_path)}
    gen = torch.Generator().manual_seed(0)
    sampler = Sampler()
    print("| case | config | old µs | new µs | new/old | sustained old µs (MHz, W, limit) "
          "| sustained new µs (MHz, W, limit) | rel err new | old == new |")
    print("|---|---|---|---|---|---|---|---|---|")
    for M, K, N, sparsity, uneven in CASES:
        _, p, b, _ = random_layer(N, K, 128, sparsity, uneven, gen)
        x = torch.randn(K, M, device="cuda", dtype=torch.float16)
        args = (x, p.values, p.row_idx, p.row_ptr, p.col_map, b, N, "none", True)
        plan = get_plan(p.row_ptr, p.col_map, N, 128)
        ref = F.linear(x.t().float(), unpack(p).float(), b.float()).t()
        case = f"{M}×{K}→{N} {sparsity:.0%} {'uneven' if uneven else 'even'}"
        for cfg in CONFIGS:
            outs = {}
            for name, lib in libs.items():
                use(lib)
                out = torch.full((N, M), float("nan"), device="cuda", dtype=torch.float16)
                dispatch.sparse_forward(*args, plan, cfg, out=out)
                outs[name] = out
            same = bool(torch.equal(outs["old"], outs["new"]))
            err = float((outs["new"].float() - ref).norm() / ref.norm())
            burst = {n: [] for n in libs}
            for r in range(3):
                for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    use(libs[name])
                    burst[name].append(dispatch._time_ms(
                        lambda: dispatch.sparse_forward(*args, plan, cfg)) * 1e3)
            med = {n: statistics.median(v) for n, v in burst.items()}
            sustained = {}
            for name in ("old", "new"):
                use(libs[name])
                time.sleep(1.0)
                step = graph_of(lambda: dispatch.sparse_forward(*args, plan, cfg))
                t0 = time.time()
                us = run_for(step, 1.5)
                got = sampler.between(t0, time.time())
                sustained[name] = f"{us:.1f} ({got[0]:.0f}, {got[1]:.0f}, {got[4]})" if got else \
                    f"{us:.1f} (n/a)"
            cfg_s = f"{cfg.block_n}x{cfg.block_m}"
            print(f"| {case} | {cfg_s} | {med['old']:.1f} | {med['new']:.1f} | "
                  f"{med['new'] / med['old']:.3f} | {sustained['old']} | {sustained['new']} | "
                  f"{err:.1e} | {same} |", flush=True)
    sampler.stop()


if __name__ == "__main__":
    main(*sys.argv[1:3])
