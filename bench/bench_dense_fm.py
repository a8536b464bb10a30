"""Feature-major dense fallback: ways to compute ``out [N, M] = W [N, K] @ x [K, M] + b``
with cuBLAS (and cuBLASLt) and with the dense Triton kernel of
``runtime/cuda/triton_dense.py`` (each config kernel choice times), against the
row-major ``F.linear(x [M, K], W, b)`` baseline (CUDA-graph replay,
``dispatch._time_ms``; fp16; results checked against fp32). The last cell of each row
times the bare GEMMs without bias in both layouts.

    PYTHONPATH=. python bench/bench_dense_fm.py
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsefx.runtime.cuda.dispatch import _time_ms

SHAPES = [(4096, 768, 768), (4096, 768, 3072), (4096, 3072, 768), (16384, 4096, 4096),
          (8192, 4096, 11008), (16, 4096, 4096)]


def variants(w, x_fm, b):
    N, M = w.shape[0], x_fm.shape[1]

    def addmm_broadcast():
        return torch.addmm(b[:, None], w, x_fm)

    def mm_then_add():
        return torch.mm(w, x_fm).add_(b[:, None])

    def addmm_into_transposed_out():
        out = torch.empty(N, M, dtype=x_fm.dtype, device=x_fm.device)
        torch.addmm(b, x_fm.t(), w.t(), out=out.t())
        return out

    def linear_then_transpose():
        return F.linear(x_fm.t(), w, b).t().contiguous()

    w_kmajor = w.t().contiguous()          # the same weight stored [K, N]

    def addmm_kmajor_weight():
        return torch.addmm(b[:, None], w_kmajor.t(), x_fm)

    def linear_then_triton_transpose():
        from sparsefx.runtime.cuda.transpose import transpose_2d
        return transpose_2d(F.linear(x_fm.t(), w, b))

    def addmm_broadcast_lt():
        # cuBLASLt instead of cuBLAS for this call (a process-wide switch: bench only)
        previous = torch.backends.cuda.preferred_blas_library()
        torch.backends.cuda.preferred_blas_library("cublaslt")
        try:
            return torch.addmm(b[:, None], w, x_fm)
        finally:
            torch.backends.cuda.preferred_blas_library(previous)

    from sparsefx.runtime.cuda.triton_dense import dense_configs, dense_fm_linear, \
        mm_then_epilogue

    def mm_then_triton_bias():
        return mm_then_epilogue(x_fm, w, b, "none")

    triton_variants = {cfg.name: lambda cfg=cfg: dense_fm_linear(x_fm, w, b, "none", cfg)
                       for cfg in dense_configs(M)}

    return {"addmm(b[:,None], W, x)": addmm_broadcast, "mm(W, x).add_(b)": mm_then_add,
            "addmm(b[:,None], W, x) cuBLASLt": addmm_broadcast_lt,
            "addmm(b, x.T, W.T, out=out.T)": addmm_into_transposed_out,
            "linear(x.T, W, b).T.contiguous()": linear_then_transpose,
            "addmm(b[:,None], Wk.T, x) (W stored K-major)": addmm_kmajor_weight,
            "transpose_2d(linear(x.T, W, b))": linear_then_triton_transpose,
            "mm(W, x) + Triton bias pass": mm_then_triton_bias,
            **triton_variants}


def main():
    gen = torch.Generator().manual_seed(0)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for M, K, N in SHAPES:
        w = (torch.randn(N, K, generator=gen) * K ** -0.5).to("cuda", torch.float16)
        b = torch.randn(N, generator=gen).to("cuda", torch.float16)
        x_rm = torch.randn(M, K, generator=gen).to("cuda", torch.float16)
        x_fm = x_rm.t().contiguous()
        ref = (x_rm.float() @ w.float().t() + b.float()).t()
        baseline = lambda: _time_ms(lambda: F.linear(x_rm, w, b)) * 1e3  # noqa: E731
        base = baseline()
        timed = []
        for name, fn in variants(w, x_fm, b).items():
            try:
                out = fn()
            except Exception as err:   # noqa: BLE001 - e.g. a config out of resources
                timed.append((name, None, f"failed: {err}"))
                continue
            ok = out.shape == (N, M) and out.is_contiguous() and \
                float((out.float() - ref).norm() / ref.norm()) < 1e-2
            timed.append((name, _time_ms(fn) * 1e3, "" if ok else ", WRONG"))
        # the clock drifts as the GPU heats: best of the baseline before and after
        base = min(base, baseline())
        cells = [f"{name}: {us:.1f} µs ({base / us:.2f}×{note})" if us is not None
                 else f"{name}: {note}" for name, us, note in timed]
        # the bare GEMMs, no bias, in both layouts: how much of the gap is the product
        # itself rather than the bias pass
        gemm_rm = _time_ms(lambda: F.linear(x_rm, w)) * 1e3
        gemm_fm = _time_ms(lambda: torch.mm(w, x_fm)) * 1e3
        cells += [f"no bias: F.linear {gemm_rm:.1f} µs, mm(W, x) {gemm_fm:.1f} µs "
                  f"({gemm_rm / gemm_fm:.2f}×)"]
        print(f"| {M}×{K}→{N} | F.linear {base:.1f} µs | " + " | ".join(cells) + " |",
              flush=True)


if __name__ == "__main__":
    main()
