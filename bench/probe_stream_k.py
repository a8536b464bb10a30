"""Stream-K vs whole-item schedules of the Triton tile kernel (bench/NOTES_tile.md,
round 6): at 4096x3072->768 (even and uneven tiles) and 4096x768->768, 75%, fp16,
G=128, feature-major, CUDA-graph timing (dispatch._time_ms): the grid kernel, the
flattened kernel with P programs, the stream-K kernel with P programs (P = items: no
item is split, so its time is the kernel's structure alone), and each compiled
kernel's registers, spills and shared memory.

    PYTHONPATH=. python bench/probe_stream_k.py
"""
import sys

import torch

sys.path.insert(0, ".")
sys.path.insert(0, "bench")
from sparsefx.runtime.cuda import dispatch  # noqa: E402
from sparsefx.runtime.cuda.plan import get_plan
from sparsefx.runtime.cuda.triton_tile import TileConfig, launch_tile_kernel

from bench_tile import kept_counts, make_layout
from sparsefx.patterns.tile import pack
gen = torch.Generator().manual_seed(0)
for (M, K, N, un) in ((4096, 3072, 768, False), (4096, 3072, 768, True), (4096, 768, 768, False)):
    counts = kept_counts(N // 128, K, 0.75, un, gen)
    layout = make_layout(N, K, 128, counts, gen)
    W = torch.randn(N, K, device="cuda", dtype=torch.float16) * 0.05
    b = torch.randn(N, device="cuda", dtype=torch.float16)
    p = pack(W, layout)
    x = torch.randn(K, M, device="cuda", dtype=torch.float16)
    plan = get_plan(p.row_ptr, p.col_map, N, 128)
    out = torch.empty(N, M, device="cuda", dtype=torch.float16)
    def run(cfg, programs):
        sched = (plan.stream_k_for if cfg.stream_k else plan.schedule_for)(cfg.block_n, cfg.block_m, cfg.block_k, M, programs, 8, x.device)
        f = lambda: launch_tile_kernel(x, True, p.values, p.row_idx, p.row_ptr, p.col_map, b, out, True, plan.order_for(cfg.block_n), plan.cols_contig, "none", cfg, sched)
        return dispatch._time_ms(f) * 1e3, (sched[2] if cfg.stream_k else 0)
    n_items = (N // 128) * (M // 128)
    grid = TileConfig(128, 128, 64, 8, 3)
    f = lambda: launch_tile_kernel(x, True, p.values, p.row_idx, p.row_ptr, p.col_map, b, out, True, plan.order_for(128), plan.cols_contig, "none", grid, None)
    print(f"{M}x{K}->{N} {'uneven' if un else 'even'}: items {n_items}; grid kernel 128x128 w8s3 {dispatch._time_ms(f)*1e3:.1f} us", flush=True)
    for programs in (132, 264):
        print(f"  flat P={programs}: {run(TileConfig(128,128,64,8,3,group_cb=8,flat=1), programs)[0]:.1f}", flush=True)
    for programs in (132, n_items, 264, 2 * n_items):
        t, slots = run(TileConfig(128,128,64,8,3,group_cb=8,flat=1,stream_k=True), programs)
        print(f"  stream-K 128x128 w8s3 P={programs}: {t:.1f} us (slots {slots})", flush=True)
    for programs in (264, 396):
        t, slots = run(TileConfig(64,128,64,4,4,group_cb=8,flat=1,stream_k=True), programs)
        print(f"  stream-K 64x128 w4s4 P={programs}: {t:.1f} us (slots {slots})", flush=True)
from sparsefx.runtime.cuda import triton_launch
for key, entry in triton_launch._compiled.items():
    if entry:
        k = entry[0]
        print(key[0].__name__ if hasattr(key[0], "__name__") else key[0], key[3], "regs", k.n_regs, "spills", k.n_spills, "shared", k.metadata.shared)
