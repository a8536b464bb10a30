"""Tiled Triton transpose: row-major ``x [M, K]`` → contiguous ``[K, M]``.

Why: row-major layers feed the tile kernels a feature-major copy of their input (the
gather wants each kept input feature as one contiguous M-vector). ``x.t().contiguous()``
runs PyTorch's generic strided copy, whose reads or writes are uncoalesced; in the
Llama MLP stack it took 0.9 ms of a 4.2 ms forward (bench/RESULTS.md). This kernel moves
[64 x 64] tiles, loading rows and storing rows (Triton transposes the tile through
shared memory), so both sides are coalesced.

This module imports triton at the top: import it only through
:mod:`sparsefx.runtime.cuda`, which guards the import.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from sparsefx.runtime.cuda.triton_launch import KernelLaunch
from sparsefx.runtime.cuda.triton_tile import _after_previous_kernel, pdl_enabled

BLOCK = 64


@triton.jit
def _transpose_kernel(x_ptr, y_ptr, M, K, stride_xm, stride_yk,
                      BM: tl.constexpr, BK: tl.constexpr, USE_PDL: tl.constexpr):
    _after_previous_kernel(USE_PDL)      # x may come from the kernel before
    offs_m = tl.program_id(0) * BM + tl.arange(0, BM)
    offs_k = tl.program_id(1) * BK + tl.arange(0, BK)
    tile = tl.load(x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm + offs_k[None, :],
                   mask=(offs_m[:, None] < M) & (offs_k[None, :] < K))
    tl.store(y_ptr + offs_k.to(tl.int64)[:, None] * stride_yk + offs_m[None, :],
             tl.trans(tile), mask=(offs_k[:, None] < K) & (offs_m[None, :] < M))


def transpose_2d(x: Tensor) -> Tensor:
    """Contiguous ``x.t()`` for a 2-D CUDA tensor. Inputs whose rows are not contiguous
    (``stride(1) != 1``) or that are empty take ``x.t().contiguous()``."""
    if x.dim() != 2 or not x.is_cuda or x.stride(1) != 1 or x.numel() == 0:
        return x.t().contiguous()
    M, K = x.shape
    y = torch.empty(K, M, dtype=x.dtype, device=x.device)
    transpose_launch(x, y).run()
    return y


def transpose_launch(x: Tensor, y: Tensor) -> KernelLaunch:
    """The launch that writes ``x.t()`` (``x`` 2-D with ``stride(1) == 1``) into the
    contiguous ``y``; tensors first, as the eager C++ path expects
    (runtime/cuda/eager_fastpath.py)."""
    M, K = x.shape
    # plain integer ceil-division: triton.cdiv is a jit function, ~5 µs per host call
    grid = (-(-M // BLOCK), -(-K // BLOCK))
    pdl = pdl_enabled(x.device)
    return KernelLaunch(_transpose_kernel, grid, (x, y), (M, K, x.stride(0), y.stride(0)),
                        dict(BM=BLOCK, BK=BLOCK, USE_PDL=pdl),
                        dict(num_warps=4, launch_pdl=pdl))


__all__ = ["transpose_2d", "transpose_launch"]
