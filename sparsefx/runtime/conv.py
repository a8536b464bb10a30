"""Convolutions as im2col GEMMs on the sparse linear ops.

A ``Conv1d/2d`` with weight ``[C_out, C_in, *k]`` is the GEMM
``unfold(x)^T @ W.view(C_out, C_in * prod(k))^T``; ``F.unfold`` orders the patch
features as ``(C_in, *k)``, which is exactly the weight's matrix view. Only zero
padding, ``groups == 1`` and batched inputs reach here (``find_prunable`` skips the rest).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _im2col(x: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
            padding: Sequence[int], dilation: Sequence[int]) -> tuple[Tensor, list[int]]:
    """``[B, L, C_in * prod(k)]`` patches and the output spatial shape."""
    one_d = x.dim() == 3
    if one_d:  # a Conv1d is a Conv2d over a height-1 image
        x = x.unsqueeze(2)
        kernel_size, stride = (1, *kernel_size), (1, *stride)
        padding, dilation = (0, *padding), (1, *dilation)
    spatial = [(size + 2 * p - d * (k - 1) - 1) // s + 1
               for size, k, s, p, d in zip(x.shape[2:], kernel_size, stride, padding, dilation)]
    if _is_patchify(x, kernel_size, stride, padding, dilation):
        cols = _patches(x, kernel_size)
    else:
        cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding,
                        stride=stride).transpose(1, 2)
    return cols, (spatial[1:] if one_d else spatial)


def _is_patchify(x: Tensor, kernel_size, stride, padding, dilation) -> bool:
    """Non-overlapping patches that tile the image exactly (ViT's patch embedding)."""
    return (tuple(kernel_size) == tuple(stride) and not any(padding)
            and all(d == 1 for d in dilation)
            and all(size % k == 0 for size, k in zip(x.shape[2:], kernel_size)))


def _patches(x: Tensor, kernel_size) -> Tensor:
    """im2col for non-overlapping patches as one reshape + permute copy, in the
    ``(C_in, kh, kw)`` feature order of ``F.unfold``. Why: ``F.unfold``'s general
    kernel took 1.0 ms for ViT-B/16's 32 × 3 × 224² input on an H200 (bench_models
    profile), a plain permute copy moves the same 9.6 MB in a few µs."""
    B, C, H, W = x.shape
    kh, kw = kernel_size
    p = x.reshape(B, C, H // kh, kh, W // kw, kw).permute(0, 2, 4, 1, 3, 5)
    return p.reshape(B, (H // kh) * (W // kw), C * kh * kw)


def _to_conv_output(y: Tensor, out_features: int, spatial: list[int]) -> Tensor:
    return y.transpose(1, 2).reshape(y.shape[0], out_features, *spatial)


def tile_conv(x: Tensor, values: Tensor, row_idx: Tensor, row_ptr: Tensor, col_map: Tensor,
              bias: Optional[Tensor], out_features: int, kernel_size: Sequence[int],
              stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
              activation: str = "none") -> Tensor:
    cols, spatial = _im2col(x, kernel_size, stride, padding, dilation)
    y = torch.ops.sparsefx.tile_linear(cols, values, row_idx, row_ptr, col_map, bias,
                                       out_features, activation, False)
    return _to_conv_output(y, out_features, spatial)


def tew_conv(x: Tensor, values: Tensor, row_idx: Tensor, row_ptr: Tensor, col_map: Tensor,
             ew_crow: Tensor, ew_col: Tensor, ew_values: Tensor, bias: Optional[Tensor],
             out_features: int, kernel_size: Sequence[int], stride: Sequence[int],
             padding: Sequence[int], dilation: Sequence[int],
             activation: str = "none") -> Tensor:
    cols, spatial = _im2col(x, kernel_size, stride, padding, dilation)
    y = torch.ops.sparsefx.tew_linear(cols, values, row_idx, row_ptr, col_map, ew_crow,
                                      ew_col, ew_values, bias, out_features, activation, False)
    return _to_conv_output(y, out_features, spatial)
