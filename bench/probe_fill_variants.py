"""Row-major write of pruned-away output features (round 17): block shapes of
``missing_features._fill_missing_kernel`` (features x tokens per program, warps) against
the ATen calls it replaced. GPU µs replayed from a CUDA graph (``dispatch._time_ms``);
fp16, 10% of the features missing, relu of a bias. Every variant's output is checked
against ATen's. (Round 17 also tried neighbouring threads on neighbouring features of one
token, a kernel variant since removed: 1.2-3.3x slower than ATen at the large shapes;
bench/RESULTS.md run 17.)

    PYTHONPATH=. python bench/probe_fill_variants.py
"""
from __future__ import annotations

import torch

from sparsefx.runtime.cuda import dispatch, register_cuda_kernels
from sparsefx.runtime.cuda.missing_features import _fill_missing_kernel

# (label, features per program, tokens per program, warps)
VARIANTS = [("16x128 w4", 16, 128, 4), ("8x128 w4", 8, 128, 4), ("16x256 w8", 16, 256, 8),
            ("32x128 w8", 32, 128, 8), ("16x64 w2", 16, 64, 2), ("64x64 w8", 64, 64, 8),
            ("32x32 w4", 32, 32, 4)]


def aten_fill(out2, missing, bias):
    out2[:, missing] = torch.relu(bias[missing].float()).to(out2.dtype)[None, :]


def triton_fill(out2, missing, bias, bf, bm, warps):
    M, N = out2.shape
    grid = (-(-missing.numel() // bf), -(-M // bm))
    _fill_missing_kernel[grid](out2, missing, bias, missing.numel(), M, 1, N,
                               HAS_BIAS=True, ACT=1, BF=bf, BM=bm, USE_PDL=False,
                               num_warps=warps)


def main():
    assert register_cuda_kernels()
    gen = torch.Generator().manual_seed(0)
    print(f"# {torch.cuda.get_device_name()}: row-major fill, GPU µs (CUDA graph)")
    print("| M×N | missing | ATen | " + " | ".join(v[0] for v in VARIANTS) + " |")
    print("|---|---|---|" + "---|" * len(VARIANTS))
    for M, N in ((4096, 768), (4096, 3072), (16384, 4096), (8192, 11008)):
        missing = torch.randperm(N, generator=gen)[:N // 10].sort().values.cuda()
        bias = torch.randn(N, generator=gen).to("cuda", torch.float16)
        out2 = torch.randn(M, N, generator=gen).to("cuda", torch.float16)
        ref = out2.clone()
        aten_fill(ref, missing, bias)
        times = [dispatch._time_ms(lambda: aten_fill(out2, missing, bias))]
        for _, bf, bm, warps in VARIANTS:
            got = torch.randn(M, N, device="cuda", dtype=torch.float16)
            got[:] = ref
            got[:, missing] = float("nan")
            triton_fill(got, missing, bias, bf, bm, warps)
            assert torch.equal(got, ref)
            times.append(dispatch._time_ms(
                lambda: triton_fill(out2, missing, bias, bf, bm, warps)))
        print(f"| {M}×{N} | {missing.numel()} | "
              + " | ".join(f"{t * 1e3:.1f}" for t in times) + " |", flush=True)


if __name__ == "__main__":
    main()
