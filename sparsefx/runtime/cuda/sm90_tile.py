"""Launcher of the Hopper CUDA C++ kernel for ``sparsefx::tile_linear``
(``csrc/tile_linear_sm90.cu``: TMA weight loads, cp.async x gather, wgmma, warp
specialisation, persistent CTAs over the host's longest-first list schedule).

Same argument conventions as :func:`sparsefx.runtime.cuda.triton_tile.tile_kernel_launch`,
restricted to a feature-major ``x [K, M]`` (the dispatcher transposes row-major inputs
first); ``out`` may be feature-major ``[N, M]`` or row-major ``[M, N]``. Needs a compute
capability 9.0 GPU, ``nvcc``, ``G % 64 == 0`` and an ``x`` whose rows span less than
4 GiB; :func:`available` says whether the library loads, :func:`why_not` why not. No
triton here.
"""
from __future__ import annotations

import ctypes
from typing import Optional

import torch
from torch import Tensor

from sparsefx.runtime.cuda import build

LIB_NAME = "tile_linear_sm90"
SOURCES = ("tile_linear_sm90.cu",)
ACT_CODES = {"none": 0, "relu": 1, "gelu": 2, "silu": 3}
#: the epilogue's ways of writing out (:meth:`TilePlan.sm90_store` picks one): straight
#: from registers; bulk tensor stores of whole tile blocks; whole row segments of a
#: row-major output, pruned-away features included (needs ``out_pos``)
STORE_CODES = {"direct": 0, "bulk": 1, "span": 2}
DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1}
#: (block_n, block_m) -> pipeline stages, as compiled in the library: [BN, 256] and
#: [128, 384] items shared by both consumer warpgroups (cooperative), [BN, 128] items one
#: per warpgroup (ping-pong); kernel choice times the 384-token items from M = 8192 on
#: (dispatch.sm90_configs)
BLOCKS = {(128, 256): 4, (128, 384): 3, (64, 256): 4, (128, 128): 6, (64, 128): 8}
BLOCK_K = 64

_configured = False

try:
    from torch._C import _cuda_getCurrentRawStream as _raw_stream
except ImportError:              # CPU-only torch: launch() is never reached
    _raw_stream = None


def library() -> Optional[ctypes.CDLL]:
    """The loaded library (built on first use), or ``None`` when unavailable."""
    global _configured
    lib = build.load(LIB_NAME, SOURCES, required_capability=(9, 0))
    if lib is not None and not _configured:
        _configure(lib)
        _configured = True
    return lib


def _configure(lib: ctypes.CDLL) -> None:
    """Declare the C signatures of the library's exported functions."""
    f = lib.sfx_tile_linear_sm90
    ll, i, p = ctypes.c_longlong, ctypes.c_int, ctypes.c_void_p
    f.argtypes = [p, ll, p, ll, i, p, p, i, p, p, ll, ll, p, p, i, i, i, i, i, i, i, ll, i, p,
                  p]
    f.restype = i
    lib.sfx_tile_linear_sm90_error.argtypes = [i]
    lib.sfx_tile_linear_sm90_error.restype = ctypes.c_char_p


def _current_stream(device: torch.device) -> int:
    """The current stream's handle (the raw query: the Stream object costs ~5 µs)."""
    if _raw_stream is not None:
        return _raw_stream(device.index if device.index is not None
                           else torch.cuda.current_device())
    return torch.cuda.current_stream(device).cuda_stream


def available() -> bool:
    """True when the kernel library builds and loads on the current GPU."""
    try:
        return torch.cuda.is_available() and library() is not None
    except Exception:            # noqa: BLE001 - any failure means "not available"
        return False


def why_not() -> Optional[str]:
    """Why :func:`available` is False (``None`` when it is True or was never asked)."""
    return build.why_not(LIB_NAME)


def supports(G: int, block_n: int, block_m: int) -> bool:
    """Whether the library has a kernel for this tile width and block shape."""
    return G % 64 == 0 and G % block_n == 0 and (block_n, block_m) in BLOCKS


def _aligned_x(x2: Tensor) -> Tensor:
    """x with tokens contiguous, a row stride that is a multiple of 8 elements and a
    16-byte aligned base (cp.async moves 16 bytes); otherwise a padded copy."""
    K, M = x2.shape
    if x2.stride(1) == 1 and x2.stride(0) % 8 == 0 and x2.data_ptr() % 16 == 0:
        return x2
    pad = -(-M // 8) * 8
    buf = torch.empty(K, pad, dtype=x2.dtype, device=x2.device)
    buf[:, :M] = x2
    return buf


def launch(x2: Tensor, values: Tensor, row_idx: Tensor, col_map: Tensor,
           bias: Optional[Tensor], out2: Tensor, out_feature_major: bool, activation: str,
           block_n: int, block_m: int, schedule: tuple, store: str = "direct",
           out_pos: Optional[Tensor] = None) -> None:
    """Run the kernel: ``x2 [K, M]`` feature-major, ``out2`` ``[N, M]`` when
    ``out_feature_major`` else ``[M, N]``. ``schedule`` = (items, progs) from
    :meth:`TilePlan.schedule_for` with ``block_k = 64``; one CTA per program.

    ``store`` (:meth:`TilePlan.sm90_store`) says how the epilogue writes ``out2``:
    ``"direct"`` from registers, only the features ``col_map`` lists; ``"bulk"`` by
    bulk tensor stores that overlap the next work item, only valid where each tile's
    features are one contiguous run (:meth:`TilePlan.can_bulk_store`; rows of ``out2``
    not 16-byte aligned fall back to direct stores); ``"span"`` (row-major ``out2``,
    increasing ``col_map``) whole row segments, every output feature: the pruned-away
    ones get ``activation(bias)``. ``out_pos`` (:meth:`TilePlan.out_positions`) is
    required for ``"span"``."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"sm90 tile kernel unavailable: {why_not()}")
    G = values.shape[1]
    if not supports(G, block_n, block_m):
        raise ValueError(f"sm90 tile kernel: unsupported G={G}, block {block_n}x{block_m}")
    if x2.dtype not in DTYPE_CODES or values.dtype != x2.dtype or out2.dtype != x2.dtype:
        raise TypeError("sm90 tile kernel: x, values and out must share fp16 or bf16")
    if store not in STORE_CODES:
        raise ValueError(f"sm90 tile kernel: unknown store {store!r}, expected one of "
                         f"{sorted(STORE_CODES)}")
    if store == "span" and (out_feature_major or out2.stride(1) != 1 or out_pos is None
                            or out_pos.dtype != torch.int32 or not out_pos.is_contiguous()
                            or out_pos.numel() != out2.shape[1]):
        raise ValueError("sm90 tile kernel: store='span' needs a row-major out with "
                         "contiguous rows and out_pos, contiguous int32 [out features] "
                         "(TilePlan.out_positions)")
    K, M = x2.shape
    if M == 0 or col_map.numel() == 0:
        return
    x2 = _aligned_x(x2)
    if (K - 1) * x2.stride(0) * x2.element_size() >= 2 ** 32:
        # the gather adds 32-bit byte offsets (row * row stride) to the token column
        raise ValueError("sm90 tile kernel: x rows span 4 GiB or more; use the Triton kernel")
    values = values.contiguous()
    if values.data_ptr() % 16:
        values = values.clone()
    row_idx = row_idx.to(torch.int32).contiguous()
    col_map = col_map.to(torch.int32).contiguous()
    if bias is not None:
        bias = bias.to(x2.dtype).contiguous()
    items, progs = schedule
    if out_feature_major:
        stride_on, stride_om = out2.stride()
    else:
        stride_om, stride_on = out2.stride()
    stream = _current_stream(x2.device)
    code = lib.sfx_tile_linear_sm90(
        x2.data_ptr(), x2.stride(0), values.data_ptr(), values.shape[0], G, row_idx.data_ptr(),
        col_map.data_ptr(), col_map.numel(), 0 if bias is None else bias.data_ptr(),
        out2.data_ptr(), stride_on, stride_om, items.data_ptr(), progs.data_ptr(),
        items.shape[0], progs.shape[0], M, DTYPE_CODES[x2.dtype], ACT_CODES[activation],
        block_n, block_m, out2.shape[0] if out_feature_major else out2.shape[1],
        STORE_CODES[store], out_pos.data_ptr() if store == "span" else 0, stream)
    if code != 0:
        msg = lib.sfx_tile_linear_sm90_error(code).decode()
        raise RuntimeError(f"sfx_tile_linear_sm90 failed ({code}): {msg}")


def native_entry(x2_row_stride: int, K: int, M: int, values: Tensor, row_idx: Tensor,
                 col_map: Tensor, bias: Optional[Tensor], out_feature_major: bool,
                 n_out: int, activation: str, block_n: int, block_m: int, schedule: tuple,
                 store: str = "direct", out_pos: Optional[Tensor] = None) -> Optional[tuple]:
    """What the C++ eager path (csrc/eager_fastpath.cpp) needs to call the kernel itself
    for calls like this one, as :func:`launch` would call it: ``(address of
    sfx_tile_linear_sm90, x row stride, items and progs addresses, their counts, dtype
    code, activation code, block_n, block_m, output features, out strides along features
    and tokens, store code, out_pos address or 0)``. None where :func:`launch` would
    first copy or convert a tensor (x rows not a multiple of 8 elements apart, values not
    contiguous and 16-byte aligned, indices not int32, a bias of another dtype or not
    contiguous), or refuse the call. The caller keeps ``schedule``'s tensors and
    ``out_pos`` alive."""
    lib = library()
    G = values.shape[1] if values.dim() == 2 else 0
    if lib is None or values.dtype not in DTYPE_CODES or not supports(G, block_n, block_m) \
            or M <= 0 or K <= 0 or col_map.numel() == 0 or activation not in ACT_CODES:
        return None
    if not (values.is_contiguous() and values.data_ptr() % 16 == 0 and
            row_idx.dtype == torch.int32 and col_map.dtype == torch.int32 and
            row_idx.is_contiguous() and col_map.is_contiguous()):
        return None
    if bias is not None and (bias.dtype != values.dtype or not bias.is_contiguous()):
        return None
    if x2_row_stride % 8 or (K - 1) * x2_row_stride * values.element_size() >= 2 ** 32:
        return None
    if store not in STORE_CODES or (store == "span" and (
            out_feature_major or out_pos is None or out_pos.dtype != torch.int32
            or not out_pos.is_contiguous() or out_pos.numel() != n_out)):
        return None
    items, progs = schedule
    stride_on, stride_om = (M, 1) if out_feature_major else (1, n_out)
    entry = ctypes.cast(lib.sfx_tile_linear_sm90, ctypes.c_void_p).value
    return (entry, x2_row_stride, items.data_ptr(), progs.data_ptr(), items.shape[0],
            progs.shape[0], DTYPE_CODES[values.dtype], ACT_CODES[activation], block_n,
            block_m, n_out, stride_on, stride_om, STORE_CODES[store],
            out_pos.data_ptr() if store == "span" else 0)


__all__ = ["available", "why_not", "supports", "launch", "library", "native_entry",
           "BLOCKS", "BLOCK_K", "STORE_CODES"]
