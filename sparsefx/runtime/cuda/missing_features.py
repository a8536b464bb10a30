"""Write the output features that column pruning removed: ``activation(bias)``, or 0.

Why: a tile-wise layer whose pruning removed whole output features (``col_map`` does not
list them) must still produce them: ``y[:, f] = activation(bias[f])`` (0 without a bias,
as every activation maps 0 to 0). The tile kernels write only the features ``col_map``
lists, so one more launch writes the rest after them. It used to be two or three ATen
calls from Python (index, activation, indexed copy); as one Triton launch it is
described by a :class:`~sparsefx.runtime.cuda.triton_launch.KernelLaunch`, so the eager
C++ path (runtime/cuda/eager_fastpath.py) replays it like the tile kernel's own launch,
and the Python path and the C++ path compute the same bits.

The activation is the tile kernels' epilogue (``triton_tile._activation``, in fp32),
so a pruned feature gets exactly what a kept feature with all-zero weights would get.

This module imports triton at the top: import it only through
:mod:`sparsefx.runtime.cuda`, which guards the import.
"""
from __future__ import annotations

from typing import Optional

import triton
import triton.language as tl
from torch import Tensor

from sparsefx.runtime.cuda.triton_launch import KernelLaunch
from sparsefx.runtime.cuda.triton_tile import (ACT_CODES, _activation,
                                               _after_previous_kernel, pdl_enabled)

#: (features, tokens) per program, by whether out is feature-major (row-major: the
#: fastest of the shapes bench/probe_fill_variants.py tried on an H100, round 17)
BLOCKS = {True: (16, 128), False: (32, 32)}


@triton.jit
def _fill_missing_kernel(out_ptr, missing_ptr, bias_ptr, n_missing, M, stride_feature,
                         stride_token, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                         BF: tl.constexpr, BM: tl.constexpr, USE_PDL: tl.constexpr):
    # the bias may come from the kernel before; out is written only after the tile
    # kernel that this launch follows (its features are disjoint, the order is Python's)
    _after_previous_kernel(USE_PDL)
    offs_f = tl.program_id(0) * BF + tl.arange(0, BF)
    f_mask = offs_f < n_missing
    feature = tl.load(missing_ptr + offs_f, mask=f_mask, other=0).to(tl.int64)
    if HAS_BIAS:
        value = _activation(tl.load(bias_ptr + feature, mask=f_mask, other=0.0)
                            .to(tl.float32), ACT)
    else:
        value = tl.zeros((BF,), dtype=tl.float32)
    offs_m = tl.program_id(1) * BM + tl.arange(0, BM)
    # neighbouring threads take neighbouring tokens of one feature: contiguous in a
    # feature-major out; in a row-major one this order measured faster than neighbouring
    # features of one token (bench/NOTES_tile.md, round 17)
    ptrs = out_ptr + feature[:, None] * stride_feature + \
        offs_m.to(tl.int64)[None, :] * stride_token
    tile = tl.broadcast_to(value[:, None], (BF, BM)).to(out_ptr.dtype.element_ty)
    tl.store(ptrs, tile, mask=f_mask[:, None] & (offs_m[None, :] < M))


def fill_missing_launch(out2: Tensor, feature_major: bool, missing: Tensor,
                        bias: Optional[Tensor], activation: str) -> Optional[KernelLaunch]:
    """The launch that writes the output features ``missing`` (int64, on out2's device)
    of the 2-D output ``out2`` (``[N, M]`` feature-major, else ``[M, N]``): each gets
    ``activation(bias[f])`` in ``out2``'s dtype, or 0 without a bias. None when there is
    nothing to write (no missing feature, or no token).

    Tensors first, as the eager C++ path expects (out, missing, bias); without a bias
    ``missing`` stands in for it (never read)."""
    M = out2.shape[1] if feature_major else out2.shape[0]
    n_missing = missing.numel()
    if not n_missing or not M:
        return None
    if feature_major:
        stride_feature, stride_token = out2.stride(0), out2.stride(1)
    else:
        stride_feature, stride_token = out2.stride(1), out2.stride(0)
    block_f, block_m = BLOCKS[feature_major]
    # plain integer ceil-division: triton.cdiv is a jit function, ~5 µs per host call
    grid = (-(-n_missing // block_f), -(-M // block_m))
    pdl = pdl_enabled(out2.device)
    return KernelLaunch(
        _fill_missing_kernel, grid, (out2, missing, missing if bias is None else bias),
        (n_missing, M, stride_feature, stride_token),
        dict(HAS_BIAS=bias is not None, ACT=ACT_CODES[activation], BF=block_f, BM=block_m,
             USE_PDL=pdl),
        dict(num_warps=4, launch_pdl=pdl))


def fill_missing(out2: Tensor, feature_major: bool, missing: Optional[Tensor],
                 bias: Optional[Tensor], activation: str) -> None:
    """Write the pruned-away output features of ``out2`` (see :func:`fill_missing_launch`);
    nothing when ``missing`` is None or empty."""
    if missing is None:
        return
    launch = fill_missing_launch(out2, feature_major, missing, bias, activation)
    if launch is not None:
        launch.run()


__all__ = ["fill_missing", "fill_missing_launch"]
