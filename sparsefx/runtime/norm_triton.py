"""Triton CUDA kernels for ``sparsefx::bias_residual_layernorm``.

Why Triton: the op is memory-bound (read ``x`` and ``residual``, write once), so a
simple Triton kernel reaches bandwidth; no CUTLASS machinery is needed.

Two kernels, one per layout:

* row-major ``[T, N]``: one program per token row, the whole row in registers
  (``BLOCK_N = next_pow2(N)``), mean and variance in fp32, two-pass in registers.
* feature-major ``[N, T]``: one program per ``BLOCK_M`` token columns. A column is
  strided by ``T`` in memory, so the program walks the ``N`` features in chunks of
  ``BLOCK_N`` rows (each chunk read is coalesced along the tokens) and merges per-chunk
  mean / M2 with Chan's parallel update (numerically stable, unlike ``E[h^2]-E[h]^2``);
  a second sweep normalises and writes. Reads are 2x, but the second sweep hits L2.

Import-safe on CPU-only machines and without triton: nothing is defined unless triton
imports, and :func:`register_norm_cuda` is a no-op (returns False) without CUDA.
Setting ``TRITON_INTERPRET=1`` runs the kernels on CPU tensors (used by the tests when
triton is installed).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

try:  # triton is an optional (gpu) dependency
    import triton
    import triton.language as tl
    # relaunch without rebinding; host-side next power of 2
    from sparsefx.runtime.cuda.triton_launch import launch, next_power_of_2
except ImportError:  # pragma: no cover - exercised on machines without triton
    triton = None
    tl = None

_MAX_ROW_BLOCK = 16384   # beyond this a row no longer fits in registers: use the reference
_registered = False


if triton is not None:
    @triton.jit
    def _brln_rows_kernel(X, R, B, W, LB, Y, N, eps,
                          HAS_BIAS: tl.constexpr, HAS_W: tl.constexpr,
                          HAS_LB: tl.constexpr, BLOCK_N: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK_N)
        mask = offs < N
        base = row * N
        h = tl.load(X + base + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            h += tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
        h += tl.load(R + base + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(h, axis=0) / N
        d = tl.where(mask, h - mean, 0.0)
        var = tl.sum(d * d, axis=0) / N
        y = d * (1.0 / tl.sqrt(var + eps))
        if HAS_W:
            y *= tl.load(W + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_LB:
            y += tl.load(LB + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + base + offs, y.to(Y.dtype.element_ty), mask=mask)

    @triton.jit
    def _pre_norm_chunk(X, R, B, start, N, M, cols, cmask, HAS_BIAS: tl.constexpr,
                        BLOCK_N: tl.constexpr):
        """x + bias + residual in fp32 for the chunk of feature rows
        ``[start, start + BLOCK_N)`` × this program's token columns of a feature-major
        ``[N, M]`` tensor; both sweeps of the column kernel read it. Returns it with the
        chunk's rows, row mask, element mask and element offsets."""
        rows = start + tl.arange(0, BLOCK_N)
        rmask = rows < N
        m = rmask[:, None] & cmask[None, :]
        offs = rows[:, None].to(tl.int64) * M + cols[None, :]
        h = tl.load(X + offs, mask=m, other=0.0).to(tl.float32)
        if HAS_BIAS:
            h += tl.load(B + rows, mask=rmask, other=0.0).to(tl.float32)[:, None]
        return h + tl.load(R + offs, mask=m, other=0.0).to(tl.float32), rows, rmask, m, offs

    @triton.jit
    def _brln_cols_kernel(X, R, B, W, LB, Y, N, M, eps,
                          HAS_BIAS: tl.constexpr, HAS_W: tl.constexpr,
                          HAS_LB: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_M: tl.constexpr):
        cols = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cmask = cols < M
        mean = tl.zeros([BLOCK_M], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_M], dtype=tl.float32)
        # sweep 1: per-chunk mean/M2, merged (Chan et al.) into the running statistics
        for start in range(0, N, BLOCK_N):
            h, rows, rmask, m, offs = _pre_norm_chunk(X, R, B, start, N, M, cols, cmask,
                                                      HAS_BIAS, BLOCK_N)
            n_chunk = tl.minimum(N - start, BLOCK_N).to(tl.float32)
            c_mean = tl.sum(tl.where(m, h, 0.0), axis=0) / n_chunk
            d = tl.where(m, h - c_mean[None, :], 0.0)
            c_m2 = tl.sum(d * d, axis=0)
            seen = start * 1.0
            total = seen + n_chunk
            delta = c_mean - mean
            mean = mean + delta * (n_chunk / total)
            m2 = m2 + c_m2 + delta * delta * (seen * n_chunk / total)
        rstd = 1.0 / tl.sqrt(m2 / N + eps)
        # sweep 2: normalise and write
        for start in range(0, N, BLOCK_N):
            h, rows, rmask, m, offs = _pre_norm_chunk(X, R, B, start, N, M, cols, cmask,
                                                      HAS_BIAS, BLOCK_N)
            y = (h - mean[None, :]) * rstd[None, :]
            if HAS_W:
                y *= tl.load(W + rows, mask=rmask, other=0.0).to(tl.float32)[:, None]
            if HAS_LB:
                y += tl.load(LB + rows, mask=rmask, other=0.0).to(tl.float32)[:, None]
            tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=m)


def triton_available() -> bool:
    return triton is not None


def bias_residual_layernorm_triton(x: Tensor, residual: Tensor, bias: Optional[Tensor],
                                   weight: Optional[Tensor], ln_bias: Optional[Tensor],
                                   eps: float, feature_major: bool = False) -> Tensor:
    """Run the fused op with the Triton kernels (CUDA tensors, or CPU under
    ``TRITON_INTERPRET=1``). Falls back to the reference for rows too long for one
    program and for dtypes Triton does not load (float64 is fine)."""
    from sparsefx.runtime.norm_ops import _check_args, reference
    n = _check_args(x, residual, bias, weight, ln_bias, feature_major)
    if triton is None or x.numel() == 0 or (not feature_major and n > _MAX_ROW_BLOCK):
        return reference(x, residual, bias, weight, ln_bias, eps, feature_major).contiguous()
    x_c, r_c = x.contiguous(), residual.to(x.dtype).contiguous()
    vecs = [v.contiguous() if v is not None else x_c for v in (bias, weight, ln_bias)]
    flags = dict(HAS_BIAS=bias is not None, HAS_W=weight is not None,
                 HAS_LB=ln_bias is not None)
    out = torch.empty_like(x_c)
    if feature_major:
        m = x_c.shape[1]
        block_m = 64
        grid = (-(-m // block_m),)      # triton.cdiv costs ~5 µs on the host
        launch(_brln_cols_kernel, grid, (x_c, r_c, *vecs, out), (n, m, float(eps)),
               dict(**flags, BLOCK_N=32, BLOCK_M=block_m), num_warps=4)
    else:
        rows = x_c.numel() // n
        block_n = next_power_of_2(n)
        warps = 4 if block_n <= 1024 else 8
        launch(_brln_rows_kernel, (rows,), (x_c, r_c, *vecs, out), (n, float(eps)),
               dict(**flags, BLOCK_N=block_n), num_warps=warps)
    return out


def register_norm_cuda() -> bool:
    """Register the Triton kernel as the CUDA implementation of the op.

    No-op returning False without CUDA or triton; True once registered (idempotent).
    """
    global _registered
    if _registered:
        return True
    if triton is None or not torch.cuda.is_available():
        return False
    from sparsefx.runtime.norm_ops import bias_residual_layernorm
    bias_residual_layernorm.register_kernel("cuda")(bias_residual_layernorm_triton)
    _registered = True
    return True


__all__ = ["register_norm_cuda", "bias_residual_layernorm_triton", "triton_available"]
