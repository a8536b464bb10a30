"""Layout conversions the layout pass inserts at feature-major chain boundaries.

Row-major activations are ``[..., F]`` (tokens first); feature-major ones are the 2-D
``[F, T]`` with ``T = prod(...)`` tokens — the layout ``sparsefx::tile_linear`` reads
fastest with ``feature_major=True``. Each conversion is one transpose copy, made
contiguous on purpose: the consumers (GEMM kernels, attention) want dense strides, and a
single explicit copy is what ``propagate_layout`` counts as "a transpose".

Plain functions (like :mod:`sparsefx.runtime.conv`), so FX graphs call them directly and
``torch.export`` traces them into ``aten`` ops.

Every conversion is a 2-D transpose of a matrix whose rows are contiguous. PyTorch's
``.contiguous()`` runs it as a generic strided copy, whose reads (or writes) are
uncoalesced; on a GPU, for plain eager or CUDA-graph runs, :func:`_transposed` runs the
tiled Triton transpose of :mod:`sparsefx.runtime.cuda.transpose` instead. Under tracing
(``torch.export``, ``make_fx``, ``torch.compile``), with autograd recording, on CPU, or
without the CUDA kernels, it takes the ``aten`` route, so traced graphs and gradients
are what they were. Both routes produce the same bits (a copy).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode


def to_feature_major(x: Tensor) -> Tensor:
    """``[..., F]`` → contiguous ``[F, T]``."""
    return _transposed(x.reshape(-1, x.shape[-1]))


def from_feature_major(y: Tensor, like: Optional[Tensor] = None,
                       shape: Optional[Sequence[int]] = None) -> Tensor:
    """Contiguous ``[..., F]`` from ``y = [F, T]``. The leading (token) dims are those of
    ``like`` (a row-major tensor with the same tokens, for graphs whose batch size may
    change) or the static ``shape[:-1]``."""
    lead = _token_dims(like, shape, default=[y.shape[1]])
    return _transposed(y).reshape(*lead, y.shape[0])


def _token_dims(like: Optional[Tensor], shape: Optional[Sequence[int]],
                default: list) -> list:
    """Leading (token) dims: those of ``like`` if given, else of the static ``shape``."""
    if like is not None:
        return list(like.shape[:-1])
    if shape is not None:
        return list(shape[:-1])
    return default


def tokens_to_shape(y: Tensor, like: Optional[Tensor] = None,
                    shape: Optional[Sequence[int]] = None) -> Tensor:
    """Row-major ``[T, F]`` → ``[..., F]`` with the token dims of ``like`` or the static
    ``shape[:-1]`` (a view). Used where ``propagate_layout`` let a sparse op read a
    feature-major input and write row-major directly, instead of a
    :func:`from_feature_major` transpose after it."""
    lead = _token_dims(like, shape, default=[y.shape[0]])
    return y.reshape(*lead, y.shape[-1])


def heads_to_feature_major(a: Tensor) -> Tensor:
    """Attention output ``[B, H, S, d]`` → contiguous feature-major ``[H*d, B*S]`` in one
    copy (the row-major route, ``transpose(1, 2)`` → ``reshape`` → transpose, copies
    twice)."""
    B, H, S, d = a.shape
    rows = a.transpose(1, 2)                  # [B, S, H, d]
    if rows.is_contiguous():
        # SDPA's flash/cuDNN kernels return [B, H, S, d] as a view of a contiguous
        # [B, S, H, d]: the conversion is the transpose of a [B*S, H*d] matrix
        return _transposed(rows.view(B * S, H * d))
    return a.permute(1, 3, 0, 2).reshape(H * d, B * S).contiguous()


def _transposed(x2: Tensor) -> Tensor:
    """Contiguous ``x2.t()`` of a 2-D ``x2``: the tiled GPU transpose where
    :func:`_tiled_transpose_applies`, else ``aten``'s copy."""
    if _tiled_transpose_applies(x2):
        from sparsefx.runtime.cuda.transpose import transpose_2d
        return transpose_2d(x2)
    return x2.t().contiguous()


def _tiled_transpose_applies(x2: Tensor) -> bool:
    """The Triton transpose runs only on a plain CUDA tensor in plain execution: not
    under a tracer or a dispatch mode (it would not be recorded), and not where autograd
    records (it has no backward). ``transpose_2d`` itself sends strided rows and empty
    tensors to ``aten``."""
    if not x2.is_cuda or type(x2) is not Tensor:
        return False
    if x2.requires_grad and torch.is_grad_enabled():
        return False
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or \
            _get_current_dispatch_mode() is not None:
        return False
    from sparsefx.runtime.cuda import register_cuda_kernels
    return register_cuda_kernels()       # False without triton; registered at import
