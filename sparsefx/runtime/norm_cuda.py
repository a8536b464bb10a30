"""CUDA C++ kernel for ``sparsefx::bias_residual_layernorm`` (``csrc/bias_residual_layernorm.cu``).

The kernel is built by :mod:`sparsefx.runtime.cuda.build` (nvcc → cached shared library)
and called through ctypes with raw pointers and the current stream, so it needs no torch
C++ extension. What it covers, all in one pass over ``x`` and ``residual``:

* row-major ``[..., N]`` in and out, ``N`` up to 8192 (up to 32768 / 16384 for 16-bit /
  fp32 inputs with ``N`` a multiple of 16 bytes): one warp per row (``N <= 2048``) or one
  CTA per row;
* feature-major ``[N, M]`` in and out, any ``N``: a CTA owns 64 bytes of consecutive
  tokens (32 half / 16 float columns) and keeps the whole ``[N, 32]`` block in registers
  for ``N <= 1024`` (read once); larger ``N`` is read twice (the second read mostly from L2);
* an output layout different from the input layout (:func:`bias_residual_layernorm_cuda`
  with ``out_feature_major``), transposed through shared memory inside the kernel:
  feature-major → row-major for any ``N``, row-major → feature-major for ``N <= 2048``.

Anything else (other dtypes, longer rows, CPU tensors, the library not built) goes to the
Triton kernel or the PyTorch reference, explicitly, in :func:`bias_residual_layernorm_cuda`.

As the op's CUDA kernel (:func:`register_norm_cuda_cpp`) it serves feature-major inputs;
row-major inputs go to the Triton row kernel where triton is installed, which measured
faster than this library's row kernel on an H200 (bench/NOTES_norm.md).

The launcher allocates only its output (``torch.empty`` on the current stream), never
synchronises, and launches on ``torch.cuda.current_stream()``: it works under CUDA-graph
capture (call it once outside the capture first, as for any lazily loaded kernel) and as
the op's CUDA kernel under ``torch.compile``.
"""
from __future__ import annotations

import ctypes
from typing import Optional

import torch
from torch import Tensor

from sparsefx.runtime.cuda import build
from sparsefx.runtime.norm_triton import triton_available

LIB_NAME = "bias_residual_layernorm"
SOURCES = ("bias_residual_layernorm.cu",)
#: return code of the C function when no kernel covers the shape (nothing was launched)
UNSUPPORTED = 10000
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

_fn = None          # the typed ctypes function, once the library is loaded
_err_str = None


def load_library() -> Optional[ctypes.CDLL]:
    """Build (first time, cached on disk) and load the kernel library; ``None`` when it is
    unavailable here (:func:`why_not` says why)."""
    global _fn, _err_str
    lib = build.load(LIB_NAME, SOURCES)
    if lib is not None and _fn is None:
        fn = lib.sfx_bias_residual_layernorm
        fn.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_longlong, ctypes.c_longlong,
                                               ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                               ctypes.c_float, ctypes.c_void_p]
        fn.restype = ctypes.c_int
        err = lib.sfx_brln_error_string
        err.argtypes = [ctypes.c_int]
        err.restype = ctypes.c_char_p
        _err_str = err
        _fn = fn
    return lib


def why_not() -> Optional[str]:
    """Why :func:`load_library` returned ``None`` (``None`` if it loaded or was not tried)."""
    return build.why_not(LIB_NAME)


def _out_shape(x: Tensor, n: int, m: int, feature_major: bool, out_fm: bool):
    if out_fm == feature_major:
        return tuple(x.shape)
    return (n, m) if out_fm else (m, n)


def _fallback(x, residual, bias, weight, ln_bias, eps, feature_major, out_fm):
    """Triton kernel (same layout in and out) or the reference, then a layout change."""
    from sparsefx.runtime.norm_ops import reference
    if out_fm == feature_major:
        if x.is_cuda:
            from sparsefx.runtime.norm_triton import bias_residual_layernorm_triton
            return bias_residual_layernorm_triton(x, residual, bias, weight, ln_bias, eps,
                                                  feature_major)
        return reference(x, residual, bias, weight, ln_bias, eps, feature_major).contiguous()
    y = reference(x, residual, bias, weight, ln_bias, eps, feature_major)
    if feature_major:                       # [N, M] -> [M, N]
        return y.t().contiguous()
    return y.reshape(-1, y.shape[-1]).t().contiguous()   # [..., N] -> [N, M]


def bias_residual_layernorm_cuda(x: Tensor, residual: Tensor, bias: Optional[Tensor],
                                 weight: Optional[Tensor], ln_bias: Optional[Tensor],
                                 eps: float, feature_major: bool,
                                 out_feature_major: Optional[bool] = None,
                                 out: Optional[Tensor] = None) -> Tensor:
    """``LayerNorm((x + bias) + residual)`` with the CUDA C++ kernel.

    ``feature_major``: layout of ``x`` / ``residual`` (``[N, M]``, else ``[..., N]``).
    ``out_feature_major``: layout of the result (default: the input layout); when it
    differs, the result is ``[N, M]`` (feature-major) or ``[M, N]`` (row-major, the token
    axes of a row-major input flattened). ``out``: optional contiguous tensor of that
    shape and ``x``'s dtype to write into (the kernel path only; shapes the kernel does
    not cover return a new tensor). Vectors and ``residual`` are cast to ``x.dtype``.
    """
    from sparsefx.runtime.norm_ops import _check_args
    n = _check_args(x, residual, bias, weight, ln_bias, feature_major)
    out_fm = feature_major if out_feature_major is None else bool(out_feature_major)
    if (not x.is_cuda or x.dtype not in _DTYPE_CODES or x.numel() == 0
            or (_fn is None and load_library() is None)):
        return _fallback(x, residual, bias, weight, ln_bias, eps, feature_major, out_fm)
    m = x.shape[1] if feature_major else x.numel() // n
    x_c = x.contiguous()
    r_c = residual.to(x.dtype).contiguous()
    vecs = [v.to(x.dtype).contiguous() if v is not None else None
            for v in (bias, weight, ln_bias)]
    shape = _out_shape(x, n, m, feature_major, out_fm)
    if out is None:
        y = torch.empty(shape, dtype=x.dtype, device=x.device)
    else:
        if (tuple(out.shape) != shape or out.dtype != x.dtype or out.device != x.device
                or not out.is_contiguous()):
            raise ValueError(f"out must be a contiguous {x.dtype} tensor of shape {shape} "
                             f"on {x.device}")
        y = out
    ptrs = [t.data_ptr() if t is not None else None for t in (x_c, r_c, *vecs, y)]
    if x.device.index != torch.cuda.current_device():
        with torch.cuda.device(x.device):
            rc = _launch(ptrs, m, n, x.dtype, feature_major, out_fm, eps, x.device)
    else:
        rc = _launch(ptrs, m, n, x.dtype, feature_major, out_fm, eps, x.device)
    if rc == UNSUPPORTED:
        return _fallback(x, residual, bias, weight, ln_bias, eps, feature_major, out_fm)
    if rc != 0:
        raise RuntimeError(f"bias_residual_layernorm CUDA kernel failed ({rc}): "
                           f"{_err_str(rc).decode()}")
    return y


def _launch(ptrs, m, n, dtype, feature_major, out_fm, eps, device) -> int:
    stream = torch.cuda.current_stream(device).cuda_stream
    return _fn(*ptrs, m, n, _DTYPE_CODES[dtype], int(feature_major), int(out_fm),
               float(eps), stream)


def _op_kernel(x, residual, bias, weight, ln_bias, eps, feature_major=False):
    """The op's CUDA kernel: this library for feature-major inputs; row-major inputs go to
    the Triton row kernel where triton is installed, because it measured faster (H200,
    2026-11-22, CUDA-graph replay, fp16: 59 vs 71 µs at 50176 x 768, 6.6 vs 9.2 µs at
    4096 x 768; feature-major this kernel: 86 vs 155 µs and 9.9 vs 50 µs; see
    bench/NOTES_norm.md). Without triton both layouts use this library."""
    if not feature_major and triton_available():
        from sparsefx.runtime.norm_triton import bias_residual_layernorm_triton
        return bias_residual_layernorm_triton(x, residual, bias, weight, ln_bias, eps, False)
    return bias_residual_layernorm_cuda(x, residual, bias, weight, ln_bias, eps,
                                        feature_major)


def register_norm_cuda_cpp() -> bool:
    """Register the CUDA C++ kernel as the op's ``cuda`` implementation (row-major
    inputs then go to the Triton kernel when triton is installed: see ``_op_kernel``).

    Registration is lazy: nothing is built or loaded here (importing sparsefx must not
    spend 30 s in nvcc or create a CUDA context); the first feature-major call builds or
    loads the library, and falls back to Triton / the reference if it is unavailable
    (:func:`why_not`). Returns False, registering nothing, without CUDA. Calling it
    again re-registers it (e.g. after the Triton kernel was registered over it)."""
    if not torch.cuda.is_available():
        return False
    from sparsefx.runtime.norm_ops import bias_residual_layernorm
    bias_residual_layernorm.register_kernel("cuda")(_op_kernel)
    return True


__all__ = ["bias_residual_layernorm_cuda", "register_norm_cuda_cpp", "load_library",
           "why_not", "UNSUPPORTED"]
