"""Why do row-major layers time 2x slower eagerly since PDL? A probe (round 11).

bench_tile's eager ``sparse µs`` of row-major layers (a Triton transpose, then the tile
kernel) went from about 35 µs (runs 6-8) to about 70 µs (run 9b, the run that turned on
programmatic dependent launch) at 4096×3072→768, 75%, while the CUDA-graph time stayed
at about 26 µs. This times the row-major sparse path, the transpose alone and the
feature-major kernel alone, eagerly (``do_bench``, L2 flushed before each call, as
bench_tile does) and from a CUDA graph, with PDL off and on in the same process.

    PYTHONPATH=. python bench/probe_eager_rm.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tile import random_layer  # noqa: E402
from sparsefx.runtime.cuda import dispatch, register_cuda_kernels, triton_tile  # noqa: E402
from sparsefx.runtime.cuda.plan import get_plan  # noqa: E402
from sparsefx.runtime.cuda.transpose import transpose_2d  # noqa: E402


def set_pdl(on: bool) -> None:
    import os
    os.environ["SPARSEFX_PDL"] = "1" if on else "0"
    triton_tile._pdl.clear()


def main():
    assert register_cuda_kernels()
    gen = torch.Generator().manual_seed(0)
    print("| M×K→N, 75% rm | PDL | path | eager do_bench µs | eager, no flush µs | graph µs |")
    print("|---|---|---|---|---|---|")
    for M, K, N in [(4096, 3072, 768), (4096, 768, 3072), (16, 4096, 4096)]:
        W, p, b, _ = random_layer(N, K, 128, 0.75, False, gen)
        x = torch.randn(M, K, device="cuda", dtype=torch.float16)
        x_fm = x.t().contiguous()
        plan = get_plan(p.row_ptr, p.col_map, N, 128)
        rm_args = (x, p.values, p.row_idx, p.row_ptr, p.col_map, b, N, "none", False)
        fm_args = (x_fm, p.values, p.row_idx, p.row_ptr, p.col_map, b, N, "none", True)
        cfg = dispatch.decide(*rm_args, force=True).config
        if cfg is None:
            continue
        paths = {"rm sparse_forward": lambda: dispatch.sparse_forward(*rm_args, plan, cfg),
                 "transpose alone": lambda: transpose_2d(x),
                 "fm kernel alone": lambda: dispatch.sparse_forward(*fm_args, plan, cfg),
                 "F.linear": lambda: F.linear(x, W, b)}
        for pdl in (False, True, False, True):
            set_pdl(pdl)
            for name, fn in paths.items():
                fn()
                eager = do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(True), torch.cuda.Event(True)
                start.record()
                for _ in range(100):
                    fn()
                end.record()
                torch.cuda.synchronize()
                loop = start.elapsed_time(end) * 10
                graph = dispatch._time_ms(fn) * 1e3
                print(f"| {M}×{K}→{N} | {int(pdl)} | {name} ({cfg.block_n}x{cfg.block_m}"
                      f"{'/sm90' if cfg.impl == 'sm90' else ''}) | {eager:.1f} | "
                      f"{loop:.1f} | {graph:.1f} |", flush=True)


if __name__ == "__main__":
    main()
