"""Device time of the write of pruned-away output features (round 17), and of the sm90
tile kernel on a layer with and without pruned features.

Per shape and layout (fp16, G = 128, 75% of K pruned per tile, ``--pruned`` of the output
features removed by column pruning), GPU µs replayed from a CUDA graph
(``dispatch._time_ms``, as kernel choice times):

* ``fill (ATen)``: the three ATen calls the Python path made before (index the bias,
  activation, indexed copy into the output);
* ``fill (Triton)``: ``missing_features.fill_missing``, the launch both paths make now;
* ``kernel only``: ``sparse_forward`` of the pruned layer with the plan's missing
  features dropped (the tile kernel alone);
* ``layer``: ``sparse_forward`` of the pruned layer (kernel + fill);
* ``unpruned layer``: a layer of the same shape and per-tile density, no feature pruned.

    PYTHONPATH=. python bench/probe_fill_missing.py [--pruned 0.1]
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from profile_host import make_layer   # bench/ is on sys.path as a script
from sparsefx.runtime.cuda import dispatch, register_cuda_kernels
from sparsefx.runtime.cuda.missing_features import fill_missing
from sparsefx.runtime.cuda.triton_tile import TileConfig
from sparsefx.runtime.ops import apply_activation


def aten_fill(out2, feature_major, missing, bias, activation):
    fill = apply_activation(bias[missing].float(), activation).to(out2.dtype)
    if feature_major:
        out2[missing] = fill[:, None]
    else:
        out2[:, missing] = fill[None, :]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pruned", type=float, default=0.1)
    pruned = ap.parse_args().pruned
    assert register_cuda_kernels()
    gen = torch.Generator().manual_seed(0)
    cfg = TileConfig(128, 256, 64, 12, 4, group_cb=32, flat=1, impl="sm90")
    print(f"# {torch.cuda.get_device_name()}, fp16, G=128, 75%, {pruned:.0%} of the output "
          "features pruned; GPU µs (CUDA graph)")
    print("| M×K→N | layout | missing | fill (ATen) | fill (Triton) | kernel only | layer "
          "| unpruned layer |")
    print("|---|---|---|---|---|---|---|---|")
    for M, K, N in ((4096, 768, 3072), (4096, 3072, 768), (16384, 4096, 4096)):
        layers = [make_layer(M, K, N, 128, gen, p) for p in (pruned, 0.0)]
        b = torch.randn(N, generator=gen).to("cuda", torch.float16)
        x_rm = torch.randn(M, K, generator=gen).to("cuda", torch.float16)
        for fm in (True, False):
            x = x_rm.t().contiguous() if fm else x_rm
            times = []
            for i, (_, (values, row_idx, row_ptr, col_map)) in enumerate(layers):
                plan = dispatch.get_plan(row_ptr, col_map, N, 128)
                args = (x, values, row_idx, row_ptr, col_map, b, N, "gelu", fm)
                out = dispatch.sparse_forward(*args, plan, cfg)
                out2 = out if fm else out.view(M, N)
                if i == 0:
                    missing = plan.missing
                    ref = out2.clone()
                    aten_fill(ref, fm, missing, b, "gelu")
                    # same values up to the last bit of gelu (torch's erf vs Triton's)
                    assert torch.allclose(ref.float(), out2.float(), rtol=2e-3, atol=1e-3)
                    bare = dataclasses.replace(plan, missing=None)
                    times += [dispatch._time_ms(lambda: aten_fill(out2, fm, missing, b, "gelu")),
                              dispatch._time_ms(lambda: fill_missing(out2, fm, missing, b, "gelu")),
                              dispatch._time_ms(lambda: dispatch.sparse_forward(*args, bare, cfg))]
                times.append(dispatch._time_ms(lambda: dispatch.sparse_forward(*args, plan, cfg)))
            print(f"| {M}×{K}→{N} | {'fm' if fm else 'rm'} | {missing.numel()} | "
                  + " | ".join(f"{t * 1e3:.1f}" for t in times) + " |", flush=True)


if __name__ == "__main__":
    main()
