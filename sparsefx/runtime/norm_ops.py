"""``sparsefx::bias_residual_layernorm``: ``LayerNorm(x + bias + residual)`` in one op.

Why: in every BERT/ViT block a linear layer is followed by bias add, dropout (identity at
inference), residual add and LayerNorm — four memory-bound kernels on the GPU that
together cost about as much as the GEMM once it is sparse (paper 002 §VI "Kernel
Fusion", §VII-D). One fused kernel reads ``x`` and ``residual`` once and writes once.

Layouts (same convention as ``tile_linear``):

* ``feature_major=False``: ``x`` and ``residual`` are ``[..., N]``; normalise the last
  axis (exactly ``F.layer_norm(x + bias + residual, [N], weight, ln_bias, eps)``).
* ``feature_major=True``: ``x`` and ``residual`` are ``[N, M]`` (features first, tokens
  second); normalise axis 0, so each *column* is one token.

``bias``, ``weight`` and ``ln_bias`` are optional ``[N]`` vectors. The sum is formed as
``(x + bias) + residual`` — the order of the unfused graph (the linear layer adds its
bias first) — so the CPU reference is bit-identical to the graph it replaces.

The default implementation is the pure-PyTorch reference (any device). For CUDA tensors,
at import, the best kernel available is registered on top of it:

1. the CUDA C++ kernel (:mod:`sparsefx.runtime.norm_cuda`, ``csrc/bias_residual_layernorm.cu``)
   when a GPU is present and its library loads — built with nvcc on the first import and
   cached on disk (:mod:`sparsefx.runtime.cuda.build`); shapes it does not cover go to
   the Triton kernel or the reference, explicitly. Row-major inputs go to the Triton row
   kernel where triton is installed (it measured faster; see ``norm_cuda._op_kernel``);
2. otherwise (no nvcc, build failure, ``SPARSEFX_DISABLE_CUDA_EXT=1``) the Triton kernel in
   :mod:`sparsefx.runtime.norm_triton`, when triton is installed.

On a CPU-only machine neither is touched and the reference stays in charge.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_args(x: Tensor, residual: Tensor, bias: Optional[Tensor], weight: Optional[Tensor],
                ln_bias: Optional[Tensor], feature_major: bool) -> int:
    """Validate shapes; returns the feature count ``N``."""
    if x.shape != residual.shape:
        raise ValueError(f"x {tuple(x.shape)} and residual {tuple(residual.shape)} must "
                         "have the same shape")
    if feature_major and x.dim() != 2:
        raise ValueError(f"feature-major x must be [N, M], got shape {tuple(x.shape)}")
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension")
    n = x.shape[0] if feature_major else x.shape[-1]
    for name, vec in (("bias", bias), ("weight", weight), ("ln_bias", ln_bias)):
        if vec is not None and tuple(vec.shape) != (n,):
            raise ValueError(f"{name} must be [{n}] (the feature count), got "
                             f"{tuple(vec.shape)}")
    return n


def reference(x: Tensor, residual: Tensor, bias: Optional[Tensor], weight: Optional[Tensor],
              ln_bias: Optional[Tensor], eps: float, feature_major: bool) -> Tensor:
    """The op's semantics in plain PyTorch (differentiable; used for autograd too)."""
    n = _check_args(x, residual, bias, weight, ln_bias, feature_major)
    h = x
    if bias is not None:
        h = h + (bias[:, None] if feature_major else bias)
    h = h + residual
    if feature_major:
        # LayerNorm over axis 0: normalise the transposed view, transpose back.
        return F.layer_norm(h.t(), [n], weight, ln_bias, eps).t().contiguous()
    return F.layer_norm(h, [n], weight, ln_bias, eps)


@torch.library.custom_op("sparsefx::bias_residual_layernorm", mutates_args=())
def bias_residual_layernorm(x: Tensor, residual: Tensor, bias: Optional[Tensor],
                            weight: Optional[Tensor], ln_bias: Optional[Tensor],
                            eps: float, feature_major: bool = False) -> Tensor:
    """``LayerNorm(x + bias + residual)`` over the feature axis (see module docstring)."""
    return reference(x, residual, bias, weight, ln_bias, eps, feature_major).contiguous()


@bias_residual_layernorm.register_fake
def _(x, residual, bias, weight, ln_bias, eps, feature_major=False):
    _check_args(x, residual, bias, weight, ln_bias, feature_major)
    return x.new_empty(x.shape)


# --------------------------------------------------------------------------- autograd
def _setup(ctx, inputs, output):
    x, residual, bias, weight, ln_bias, eps, feature_major = inputs
    ctx.save_for_backward(x, residual, bias, weight, ln_bias)
    ctx.eps, ctx.feature_major = eps, feature_major


def _backward(ctx, grad):
    """Gradients by differentiating the reference: the op is cheap to recompute and this
    keeps one source of truth for the math (fine-tuning, not inference, runs this)."""
    x, residual, bias, weight, ln_bias = ctx.saved_tensors
    leaves = [t.detach().requires_grad_(True) if t is not None else None
              for t in (x, residual, bias, weight, ln_bias)]
    with torch.enable_grad():
        out = reference(*leaves, ctx.eps, ctx.feature_major)
        wanted = [t for t, need in zip(leaves, ctx.needs_input_grad[:5])
                  if t is not None and need]
        grads = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True)
                     if wanted else ())
    result = [next(grads) if (t is not None and need) else None
              for t, need in zip(leaves, ctx.needs_input_grad[:5])]
    return (*result, None, None)


bias_residual_layernorm.register_autograd(_backward, setup_context=_setup)

OP = torch.ops.sparsefx.bias_residual_layernorm.default


def _register_cuda() -> None:
    """CUDA C++ kernel first, Triton kernel as the fallback (see the module docstring).
    Both are no-ops without CUDA, so a CPU-only machine keeps the reference."""
    from sparsefx.runtime.norm_cuda import register_norm_cuda_cpp
    if register_norm_cuda_cpp():
        return
    try:
        from sparsefx.runtime.norm_triton import register_norm_cuda
    except ImportError:
        return
    register_norm_cuda()


_register_cuda()
