"""Layout conversions the layout pass inserts at feature-major chain boundaries.

Row-major activations are ``[..., F]`` (tokens first); feature-major ones are the 2-D
``[F, T]`` with ``T = prod(...)`` tokens — the layout ``sparsefx::tile_linear`` reads
fastest with ``feature_major=True``. Each conversion is one transpose copy, made
contiguous on purpose: the consumers (GEMM kernels, attention) want dense strides, and a
single explicit copy is what ``propagate_layout`` counts as "a transpose".

Plain functions (like :mod:`sparsefx.runtime.conv`), so FX graphs call them directly and
``torch.export`` traces them into ``aten`` ops.
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor


def to_feature_major(x: Tensor) -> Tensor:
    """``[..., F]`` → contiguous ``[F, T]``."""
    return x.reshape(-1, x.shape[-1]).t().contiguous()


def from_feature_major(y: Tensor, like: Optional[Tensor] = None,
                       shape: Optional[Sequence[int]] = None) -> Tensor:
    """Contiguous ``[..., F]`` from ``y = [F, T]``. The leading (token) dims are those of
    ``like`` (a row-major tensor with the same tokens, for graphs whose batch size may
    change) or the static ``shape[:-1]``."""
    lead = _token_dims(like, shape, default=[y.shape[1]])
    return y.t().reshape(*lead, y.shape[0]).contiguous()


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
    return a.permute(1, 3, 0, 2).reshape(H * d, B * S).contiguous()
