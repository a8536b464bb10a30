"""The ``sparsefx`` operator library: schemas, CPU references, fake kernels, autograd.

Every op here is a :func:`torch.library.custom_op` in namespace ``sparsefx`` so that
FX graphs, ``torch.export`` and ``torch.compile`` see one opaque node per sparse layer.
Tensor arguments come first, then the attributes (``out_features``, ``activation``,
``feature_major``), which lets exporters map the op onto a custom ONNX node directly.

The default implementation of each op is the pure-PyTorch reference: it rebuilds the
dense masked weight from the packed tensors and runs a dense matmul. It works on any
device; :mod:`sparsefx.runtime.cuda` registers faster CUDA kernels on top of it when a
GPU is present.

Layouts: with ``feature_major=False`` (row-major) ``x`` is ``[..., K]`` and the result
``[..., N]``; with ``feature_major=True`` ``x`` is ``[K, M]`` and the result ``[N, M]``
(features first, tokens second — the layout the tile kernels read fastest).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from sparsefx.patterns.tile import gather_tensors, unpack_tensors

ACTIVATIONS = ("none", "relu", "gelu", "silu")


def apply_activation(y: Tensor, activation: str) -> Tensor:
    """Apply one of :data:`ACTIVATIONS` (``gelu`` is the exact, erf form)."""
    if activation == "none":
        return y
    if activation == "relu":
        return torch.relu(y)
    if activation == "gelu":
        return F.gelu(y)
    if activation == "silu":
        return F.silu(y)
    raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


def _check_tile_args(x: Tensor, values: Tensor, out_features: int, activation: str,
                     feature_major: bool) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    if values.dim() != 2:
        raise ValueError(f"values must be [rows, G], got shape {tuple(values.shape)}")
    if feature_major and x.dim() != 2:
        raise ValueError(f"feature-major x must be [K, M], got shape {tuple(x.shape)}")
    if out_features < 0:
        raise ValueError(f"out_features must be >= 0, got {out_features}")


def _dense_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                  feature_major: bool) -> Tensor:
    if feature_major:
        y = weight @ x
        return y if bias is None else y + bias[:, None]
    return F.linear(x, weight, bias)


def _in_features(x: Tensor, feature_major: bool) -> int:
    return x.shape[0] if feature_major else x.shape[-1]


def _out_shape(x: Tensor, out_features: int, feature_major: bool) -> list[int]:
    if feature_major:
        return [out_features, x.shape[1]]
    return [*x.shape[:-1], out_features]


# --------------------------------------------------------------------------- tile_linear
@torch.library.custom_op("sparsefx::tile_linear", mutates_args=())
def tile_linear(x: Tensor, values: Tensor, row_idx: Tensor, row_ptr: Tensor,
                col_map: Tensor, bias: Optional[Tensor], out_features: int,
                activation: str = "none", feature_major: bool = False) -> Tensor:
    """``activation(x @ W.T + bias)`` with ``W`` in the TW packed format.

    See :mod:`sparsefx.patterns.tile` for the meaning of ``values``, ``row_idx``,
    ``row_ptr`` and ``col_map``.
    """
    _check_tile_args(x, values, out_features, activation, feature_major)
    weight = unpack_tensors(values, row_idx, row_ptr, col_map, out_features,
                            _in_features(x, feature_major))
    y = _dense_linear(x, weight.to(x.dtype), bias, feature_major)
    return apply_activation(y, activation).contiguous()


@tile_linear.register_fake
def _(x, values, row_idx, row_ptr, col_map, bias, out_features, activation="none",
      feature_major=False):
    _check_tile_args(x, values, out_features, activation, feature_major)
    return x.new_empty(_out_shape(x, out_features, feature_major))


# --------------------------------------------------------------------------- tew_linear
@torch.library.custom_op("sparsefx::tew_linear", mutates_args=())
def tew_linear(x: Tensor, values: Tensor, row_idx: Tensor, row_ptr: Tensor,
               col_map: Tensor, ew_crow: Tensor, ew_col: Tensor, ew_values: Tensor,
               bias: Optional[Tensor], out_features: int, activation: str = "none",
               feature_major: bool = False) -> Tensor:
    """Tile-element-wise (TEW) linear: a TW part plus restored single elements.

    ``W = W_tile + W_ew`` where ``W_tile`` is in the TW packed format and ``W_ew`` is
    CSR over output features (``ew_crow [N+1]``, ``ew_col [nnz]`` input features,
    ``ew_values [nnz]``). The result is ``activation(x @ W.T + bias)``.
    """
    _check_tile_args(x, values, out_features, activation, feature_major)
    in_features = _in_features(x, feature_major)
    weight = unpack_tensors(values, row_idx, row_ptr, col_map, out_features, in_features)
    weight = weight + csr_to_dense(ew_crow, ew_col, ew_values, out_features, in_features)
    y = _dense_linear(x, weight.to(x.dtype), bias, feature_major)
    return apply_activation(y, activation).contiguous()


@tew_linear.register_fake
def _(x, values, row_idx, row_ptr, col_map, ew_crow, ew_col, ew_values, bias,
      out_features, activation="none", feature_major=False):
    _check_tile_args(x, values, out_features, activation, feature_major)
    return x.new_empty(_out_shape(x, out_features, feature_major))


def csr_to_dense(crow: Tensor, col: Tensor, vals: Tensor, rows: int, cols: int) -> Tensor:
    """Dense ``[rows, cols]`` from CSR arrays; differentiable w.r.t. ``vals``."""
    counts = (crow[1:] - crow[:-1]).long()
    row_of = torch.repeat_interleave(torch.arange(rows, device=vals.device), counts,
                                     output_size=vals.numel())
    dense = vals.new_zeros(rows, cols)
    return dense.index_put((row_of, col.long()), vals)


def csr_gather(dense: Tensor, crow: Tensor, col: Tensor) -> Tensor:
    counts = (crow[1:] - crow[:-1]).long()
    row_of = torch.repeat_interleave(torch.arange(dense.shape[0], device=dense.device),
                                     counts, output_size=col.numel())
    return dense[row_of, col.long()]


# --------------------------------------------------------------------------- autograd
def _grad_pre_activation(grad: Tensor, pre: Tensor, activation: str) -> Tensor:
    if activation == "none":
        return grad
    with torch.enable_grad():
        z = pre.detach().requires_grad_(True)
        (dz,) = torch.autograd.grad(apply_activation(z, activation), z, grad)
    return dz


def _linear_grads(ctx, dz: Tensor, weight: Tensor):
    """Gradients of ``x @ W.T + b`` w.r.t. x, the dense weight and the bias."""
    x = ctx.saved_tensors[0]
    dx = dw = db = None
    if ctx.feature_major:                       # dz [N, M], x [K, M]
        if ctx.needs_x:
            dx = weight.t().to(dz.dtype) @ dz
        if ctx.needs_w:
            dw = dz @ x.t()
        if ctx.needs_b:
            db = dz.sum(dim=1)
    else:
        dz2, x2 = dz.reshape(-1, dz.shape[-1]), x.reshape(-1, x.shape[-1])
        if ctx.needs_x:
            dx = (dz2 @ weight.to(dz.dtype)).reshape(x.shape)
        if ctx.needs_w:
            dw = dz2.t() @ x2
        if ctx.needs_b:
            db = dz2.sum(dim=0)
    return dx, dw, db


def _setup_tile(ctx, inputs, output):
    x, values, row_idx, row_ptr, col_map, bias, out_features, activation, fm = inputs
    ctx.save_for_backward(x, values, row_idx, row_ptr, col_map, bias)
    ctx.out_features, ctx.activation, ctx.feature_major = out_features, activation, fm
    ctx.needs_x, ctx.needs_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    ctx.needs_b = bias is not None and ctx.needs_input_grad[5]


def _backward_tile(ctx, grad):
    x, values, row_idx, row_ptr, col_map, bias = ctx.saved_tensors
    pre = None
    if ctx.activation != "none":
        pre = tile_linear(x, values, row_idx, row_ptr, col_map, bias, ctx.out_features,
                          "none", ctx.feature_major)
    dz = _grad_pre_activation(grad, pre, ctx.activation)
    weight = unpack_tensors(values, row_idx, row_ptr, col_map, ctx.out_features,
                            _in_features(x, ctx.feature_major))
    dx, dw, db = _linear_grads(ctx, dz, weight)
    dvalues = None if dw is None else gather_tensors(dw, row_idx, row_ptr, col_map,
                                                      values.shape[1]).to(values.dtype)
    return dx, dvalues, None, None, None, db, None, None, None


tile_linear.register_autograd(_backward_tile, setup_context=_setup_tile)


def _setup_tew(ctx, inputs, output):
    (x, values, row_idx, row_ptr, col_map, ew_crow, ew_col, ew_values, bias,
     out_features, activation, fm) = inputs
    ctx.save_for_backward(x, values, row_idx, row_ptr, col_map, ew_crow, ew_col,
                          ew_values, bias)
    ctx.out_features, ctx.activation, ctx.feature_major = out_features, activation, fm
    ctx.needs_x = ctx.needs_input_grad[0]
    ctx.needs_w = ctx.needs_input_grad[1] or ctx.needs_input_grad[7]
    ctx.needs_b = bias is not None and ctx.needs_input_grad[8]


def _backward_tew(ctx, grad):
    x, values, row_idx, row_ptr, col_map, ew_crow, ew_col, ew_values, bias = \
        ctx.saved_tensors
    pre = None
    if ctx.activation != "none":
        pre = tew_linear(x, values, row_idx, row_ptr, col_map, ew_crow, ew_col,
                         ew_values, bias, ctx.out_features, "none", ctx.feature_major)
    dz = _grad_pre_activation(grad, pre, ctx.activation)
    in_features = _in_features(x, ctx.feature_major)
    weight = unpack_tensors(values, row_idx, row_ptr, col_map, ctx.out_features,
                            in_features)
    weight = weight + csr_to_dense(ew_crow, ew_col, ew_values, ctx.out_features,
                                   in_features)
    dx, dw, db = _linear_grads(ctx, dz, weight)
    dvalues = dew = None
    if dw is not None:
        dvalues = gather_tensors(dw, row_idx, row_ptr, col_map,
                                 values.shape[1]).to(values.dtype)
        dew = csr_gather(dw, ew_crow, ew_col).to(ew_values.dtype)
    return dx, dvalues, None, None, None, None, None, dew, db, None, None, None


tew_linear.register_autograd(_backward_tew, setup_context=_setup_tew)

#: Every op this module defines, for verifiers and exporters.
SPARSEFX_OPS = {
    "tile_linear": torch.ops.sparsefx.tile_linear.default,
    "tew_linear": torch.ops.sparsefx.tew_linear.default,
}
