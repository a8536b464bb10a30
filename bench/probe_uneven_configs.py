"""Do finer work items help uneven BERT layers? A probe (round 12).

Uneven tiles cost +8 to +28% over even ones at the BERT N = 768 shapes (RESULTS run
12b): the time is set by the heaviest tile's programs (NOTES rounds 6, 10, 11). Kernel
choice decides per density profile, so a candidate that only wins on uneven layers
would be used there. This times, for each BERT shape at 50/75/90% and both profiles,
the config choice keeps against configs it does not time for M > 1024: 64-token blocks
of 128 features (twice the programs, each half as long) and persistent variants of
them. Same timer as choice (``dispatch._time_ms``), best of three alternating rounds.

    PYTHONPATH=. python bench/probe_uneven_configs.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tile import random_layer  # noqa: E402
from sparsefx.patterns.tile import unpack  # noqa: E402
from sparsefx.runtime.cuda import dispatch, register_cuda_kernels  # noqa: E402
from sparsefx.runtime.cuda.plan import get_plan  # noqa: E402
from sparsefx.runtime.cuda.triton_tile import TileConfig  # noqa: E402

EXTRA = [TileConfig(128, 64, 64, 4, 4), TileConfig(128, 64, 64, 4, 3),
         TileConfig(128, 64, 32, 4, 5), TileConfig(128, 64, 64, 8, 3),
         TileConfig(128, 64, 64, 4, 4, flat=2), TileConfig(128, 64, 64, 4, 4, flat=3),
         TileConfig(128, 64, 64, 4, 4, flat=4), TileConfig(64, 64, 64, 4, 4, flat=4),
         TileConfig(128, 128, 64, 8, 3, flat=1)]
ROUNDS = 3


def fmt(c: TileConfig) -> str:
    s = f"{c.block_n}x{c.block_m}x{c.block_k}/w{c.num_warps}s{c.num_stages}"
    return s + (f"/flat{c.flat}" if c.flat else "") + ("/sm90" if c.impl == "sm90" else "")


def main():
    assert register_cuda_kernels()
    gen = torch.Generator().manual_seed(0)
    print("| case | profile | chosen config | chosen µs | best extra config | extra µs "
          "| extra/chosen | extra rel err |")
    print("|---|---|---|---|---|---|---|---|")
    for M, K, N in [(4096, 768, 768), (4096, 3072, 768), (4096, 768, 3072)]:
        for sparsity in (0.5, 0.75, 0.9):
            for uneven in (False, True):
                _, p, b, _ = random_layer(N, K, 128, sparsity, uneven, gen)
                x = torch.randn(K, M, device="cuda", dtype=torch.float16)
                args = (x, p.values, p.row_idx, p.row_ptr, p.col_map, b, N, "none", True)
                plan = get_plan(p.row_ptr, p.col_map, N, 128)
                dec = dispatch.decide(*args, force=True)
                best = {}
                cfgs = [dec.config] + EXTRA
                for r in range(ROUNDS):
                    for cfg in (cfgs if r % 2 == 0 else cfgs[::-1]):
                        try:
                            ms = dispatch._time_ms(
                                lambda: dispatch.sparse_forward(*args, plan, cfg))
                        except Exception:      # noqa: BLE001 - a config that does not fit
                            continue
                        best[cfg] = min(ms, best.get(cfg, ms))
                chosen_us = best[dec.config] * 1e3
                extra = min((c for c in EXTRA if c in best), key=best.get)
                ref = (unpack(p).float() @ x.float()) + b.float()[:, None]
                out = dispatch.sparse_forward(*args, plan, extra).float()
                err = float((out - ref).norm() / ref.norm())
                print(f"| {M}×{K}→{N} {sparsity:.0%} | {'uneven' if uneven else 'even'} | "
                      f"{fmt(dec.config)} | {chosen_us:.1f} | {fmt(extra)} | "
                      f"{best[extra] * 1e3:.1f} | {best[extra] * 1e3 / chosen_us:.3f} | "
                      f"{err:.1e} |", flush=True)


if __name__ == "__main__":
    main()
