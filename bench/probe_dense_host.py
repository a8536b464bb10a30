"""Eager cost of each feature-major dense variant (round 8): host µs per call
(back-to-back calls, bench/profile_host.per_call_us) and eager do_bench median of the
op after kernel choice, repeated, at 4096×768→768 and 16×4096→4096, fp16, 0% sparsity.
Round 15 added the op's host cost under ``inference_mode`` (the C++ eager path once a
layer is registered) with the layer forced to the "direct" variant and to the first
CUTLASS variant (``sm90_fm_*``, where available); round 16 the pointer-load dense Triton
variants (``triton_fm_*`` without ``_tma``), which now get C++ records too.

    PYTHONPATH=. python bench/probe_dense_host.py
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from profile_host import per_call_us     # bench/ is on sys.path when run as a script
from sparsefx.patterns.tile import TileLayout, pack
from sparsefx.runtime.cuda import dispatch


def main():
    gen = torch.Generator().manual_seed(0)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for M, K, N in ((4096, 768, 768), (16, 4096, 4096)):
        w = torch.randn(N, K, generator=gen) * K ** -0.5
        T = -(-N // 128)
        packed = pack(w, TileLayout(N, K, 128, torch.arange(N),
                                    torch.ones(T, K, dtype=torch.bool)))
        values = packed.values.to("cuda", torch.float16)
        row_idx, row_ptr, col_map = (t.cuda() for t in (packed.row_idx, packed.row_ptr,
                                                        packed.col_map))
        bias = torch.randn(N, generator=gen).to("cuda", torch.float16)
        x = torch.randn(K, M, generator=gen).to("cuda", torch.float16)
        x_rm = x.t().contiguous()
        w16 = w.to("cuda", torch.float16)
        args = (x, values, row_idx, row_ptr, col_map, bias, N, "none", True)
        dec = dispatch.decide(*args)
        op = lambda: torch.ops.sparsefx.tile_linear(*args)  # noqa: E731
        cells = [f"choice {dec.choice}/{dec.dense_variant}"]
        linear = lambda: F.linear(x_rm, w16, bias)  # noqa: E731
        cells.append(f"F.linear host {per_call_us(linear, 2000):.1f}")
        with torch.inference_mode():
            cells.append(f"F.linear inference_mode host {per_call_us(linear, 2000):.1f}")
        for variant in dispatch.dense_variants(True, M, K):
            fn = lambda v=variant: dispatch.dense_forward(*args, v)  # noqa: E731
            cells.append(f"{variant} host {per_call_us(fn, 2000):.1f}")
        with torch.no_grad():
            cells.append(f"op host {per_call_us(op, 2000):.1f}")
            eager = [do_bench(op, return_mode='median') * 1e3 for _ in range(3)]
        dense = [do_bench(lambda: F.linear(x_rm, w16, bias), return_mode='median') * 1e3
                 for _ in range(3)]
        cells.append("op eager " + "/".join(f"{t:.1f}" for t in eager))
        cutlass = [v for v in dispatch.dense_variants(True, M, K) if v.startswith("sm90_fm_")]
        triton_ptr = [v for v in dispatch.dense_variants(True, M, K)
                      if v.startswith("triton_fm_") and "_tma" not in v]
        for variant in ["direct"] + cutlass[:1] + triton_ptr:
            # the same layer, kept dense by `variant`: calls 1-2 take Python (the second
            # registers the layer with the C++ path), the rest run in C++
            dispatch._memory[dec.key] = dataclasses.replace(dec, choice="dense",
                                                            dense_variant=variant)
            dispatch._forget_fast_paths()
            with torch.inference_mode():
                cells.append(f"op inference_mode forced {variant} host "
                             f"{per_call_us(op, 2000):.1f}")
        cells.append("F.linear eager " + "/".join(f"{t:.1f}" for t in dense))
        print(f"| {M}×{K}→{N} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
