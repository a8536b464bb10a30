"""Host µs per eager call of a layer on the sm90 tile kernel (round 16): the op under
``inference_mode`` once the layer is pinned to an sm90 config (from its third call the
C++ record calls the library), against ``sparse_forward`` from Python (the path before)
and ``F.linear``; plus eager ``do_bench`` medians (L2 flushed) of the op and
``F.linear``. fp16, G = 128, 75% sparse, both layouts. ``--pruned-features F``
removes that fraction of the output features by column pruning (round 17: the record
then ends with the launch that writes them).

    PYTHONPATH=. python bench/probe_sm90_host.py [--pruned-features 0.1]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from profile_host import make_layer, per_call_us   # bench/ is on sys.path as a script
from sparsefx.patterns.tile import unpack
from sparsefx.runtime.cuda import dispatch, eager_fastpath, register_cuda_kernels
from sparsefx.runtime.cuda.triton_tile import TileConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pruned-features", type=float, default=0.0)
    pruned = ap.parse_args().pruned_features
    assert register_cuda_kernels()
    gen = torch.Generator().manual_seed(0)
    print(f"# {torch.cuda.get_device_name()}, fp16, G=128, 75%, {pruned:.0%} of the "
          "output features pruned away; host µs per call")
    print("| M×K→N | layout | config | F.linear | sparse_forward (Python) | op, C++ record "
          "| C++ hits | eager op µs | eager F.linear µs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for M, K, N in ((4096, 768, 3072), (4096, 3072, 768), (256, 768, 768)):
        packed, (values, row_idx, row_ptr, col_map) = make_layer(M, K, N, 128, gen, pruned)
        b = torch.randn(N, generator=gen).to("cuda", torch.float16)
        w = unpack(packed).half().cuda()
        x_rm = torch.randn(M, K, generator=gen).to("cuda", torch.float16)
        plan = dispatch.get_plan(row_ptr, col_map, N, 128)
        assert (plan.missing is not None) == (pruned > 0)
        for fm in (True, False):
            x = x_rm.t().contiguous() if fm else x_rm
            args = (x, values, row_idx, row_ptr, col_map, b, N, "none", fm)
            key, shape = dispatch._key_and_shape(x, values, plan, b, N, "none", fm)
            for block_m, stages in ((256, 4), (128, 6)):
                cfg = TileConfig(128, block_m, 64, 12, stages, group_cb=32, flat=1,
                                 impl="sm90")
                # pinned without timing: this probe measures host cost, not the choice
                dispatch._memory[key] = dispatch.Decision(key, "sparse", 1.0, 2.0, cfg,
                                                          shape)
                dispatch._forget_fast_paths()
                eager_fastpath.clear()
                eager_fastpath.reset_stats()
                op = lambda: torch.ops.sparsefx.tile_linear(*args)  # noqa: E731
                linear = lambda: F.linear(x_rm, w, b)  # noqa: E731
                with torch.inference_mode():
                    cells = [per_call_us(linear, 2000),
                             per_call_us(lambda: dispatch.sparse_forward(*args, plan, cfg),
                                         2000),
                             per_call_us(op, 2000)]
                    hits = eager_fastpath.stats()[0]
                    eager = do_bench(op, return_mode="median") * 1e3
                    dense = do_bench(linear, return_mode="median") * 1e3
                print(f"| {M}×{K}→{N} | {'fm' if fm else 'rm'} | 128x{block_m} | "
                      + " | ".join(f"{c:.1f}" for c in cells)
                      + f" | {hits} | {eager:.1f} | {dense:.1f} |", flush=True)


if __name__ == "__main__":
    main()
