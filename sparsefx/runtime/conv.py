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
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)
    return cols.transpose(1, 2), (spatial[1:] if one_d else spatial)


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
