"""Launcher of the Hopper dense feature-major GEMM (``csrc/dense_fm_sm90.cu``, CUTLASS 3
collectives): ``out [N, M] = act(W [N, K] @ x [K, M] + bias[:, None])``.

Why: a feature-major layer that kernel choice runs dense needs the bias along the output's
first dimension, which cuBLAS cannot fuse (see :mod:`triton_dense`); CUTLASS's epilogue
broadcasts it per row. Kernel choice times each configuration of the library as one more
dense variant (:func:`sparsefx.runtime.cuda.dispatch.dense_variants`, names
``sm90_fm_<config>``).

Needs a compute capability 9.0 GPU, ``nvcc`` and the CUTLASS headers: the
``nvidia-cutlass`` wheel (``pip install nvidia-cutlass``, headers only, ~6 MB) or a CUTLASS
checkout named by ``$SPARSEFX_CUTLASS_DIR``. Without them :func:`available` is False and
kernel choice simply does not time these variants. Operands: ``M`` and ``K`` multiples
of 8 (16-byte TMA rows); other inputs are copied to contiguous, aligned tensors first.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import re
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from sparsefx.runtime.cuda import build

LIB_NAME = "dense_fm_sm90"
SOURCES = ("dense_fm_sm90.cu",)
CUTLASS_ENV = "SPARSEFX_CUTLASS_DIR"
ACT_CODES = {"none": 0, "relu": 1, "gelu": 2, "silu": 3}
DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1}
VARIANT_PREFIX = "sm90_fm_"

_no_headers: Optional[str] = None

try:
    from torch._C import _cuda_getCurrentRawStream as _raw_stream
except ImportError:              # CPU-only torch: launch() is never reached
    _raw_stream = None


def cutlass_root() -> Optional[Path]:
    """The CUTLASS source root (with ``include/`` and ``tools/util/include/``):
    ``$SPARSEFX_CUTLASS_DIR``, else the one inside the ``nvidia-cutlass`` wheel."""
    env = os.environ.get(CUTLASS_ENV)
    if env:
        return Path(env)
    # find the package without importing it (its __init__ imports optional dependencies)
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).resolve() / "source"


def _cutlass_version(include: Path) -> str:
    """``major.minor.patch`` from ``cutlass/version.h`` (part of the build's cache key,
    so a different CUTLASS rebuilds the library)."""
    text = (include / "cutlass" / "version.h").read_text()
    parts = [re.search(rf"#define CUTLASS_{k}\s+(\d+)", text) for k in
             ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) if m else "0" for m in parts)


def extra_flags() -> Optional[list[str]]:
    """nvcc flags on top of :func:`build.compile_flags`: the CUTLASS include directories,
    its version, and ``NDEBUG`` (device asserts are calls, and a call between wgmmas
    serializes them: ptxas warning C7510). ``None`` when no CUTLASS headers are found."""
    root = cutlass_root()
    if root is None:
        return None
    include, util = root / "include", root / "tools" / "util" / "include"
    if not (include / "cutlass" / "gemm" / "collective" / "collective_builder.hpp").exists() \
            or not (util / "cutlass" / "util" / "packed_stride.hpp").exists():
        return None
    return ["-DNDEBUG", f"-DSFX_CUTLASS_VERSION={_cutlass_version(include)}",
            f"-I{include}", f"-I{util}"]


def library() -> Optional[ctypes.CDLL]:
    """The loaded library (built on first use: a few minutes of nvcc), or ``None``.
    :func:`build.load` keeps the outcome, so a call on the hot path costs one lookup."""
    global _no_headers
    flags = _flags_for(os.environ.get(CUTLASS_ENV))
    if flags is None:
        _no_headers = build.disabled(LIB_NAME) or (
            f"CUTLASS headers not found (pip install nvidia-cutlass, or set {CUTLASS_ENV} "
            "to a CUTLASS checkout)")
        return None
    _no_headers = None
    lib = build.load(LIB_NAME, SOURCES, extra_flags=flags, required_capability=(9, 0))
    if lib is not None and not hasattr(lib, "sfx_config_names"):
        _configure(lib)
    return lib


@functools.lru_cache(maxsize=4)
def _flags_for(cutlass_dir: Optional[str]) -> Optional[tuple[str, ...]]:
    """:func:`extra_flags`, looked up once per value of ``$SPARSEFX_CUTLASS_DIR``."""
    flags = extra_flags()
    return None if flags is None else tuple(flags)


def _configure(lib: ctypes.CDLL) -> None:
    """Declare the C signatures of the library's exported functions."""
    i, p, ull = ctypes.c_int, ctypes.c_void_p, ctypes.c_ulonglong
    lib.sfx_dense_fm_sm90.argtypes = [i, i, i, p, p, p, p, i, i, i, p, ull, i, p]
    lib.sfx_dense_fm_sm90.restype = i
    lib.sfx_dense_fm_sm90_workspace.argtypes = [i, i, i, i, i, i, i, ctypes.POINTER(ull)]
    lib.sfx_dense_fm_sm90_workspace.restype = i
    lib.sfx_dense_fm_sm90_config_count.restype = i
    lib.sfx_dense_fm_sm90_config_name.argtypes = [i]
    lib.sfx_dense_fm_sm90_config_name.restype = ctypes.c_char_p
    lib.sfx_dense_fm_sm90_error.argtypes = [i]
    lib.sfx_dense_fm_sm90_error.restype = ctypes.c_char_p
    # read once: the names are also the variant names kernel choice stores
    lib.sfx_config_names = tuple(lib.sfx_dense_fm_sm90_config_name(k).decode()
                                 for k in range(lib.sfx_dense_fm_sm90_config_count()))


def available() -> bool:
    """True when the library builds and loads on the current GPU."""
    try:
        return library() is not None
    except Exception:            # noqa: BLE001 - any failure means "not available"
        return False


def why_not() -> Optional[str]:
    """Why :func:`available` is False (``None`` when it is True)."""
    library()
    return build.why_not(LIB_NAME) or _no_headers


def config_names() -> tuple[str, ...]:
    """The library's configurations, in index order (empty when unavailable)."""
    lib = library()
    return () if lib is None else lib.sfx_config_names


def supports(M: int, K: int) -> bool:
    """Whether the operands' shapes fit the kernels (TMA rows are 16-byte multiples)."""
    return M > 0 and K > 0 and M % 8 == 0 and K % 8 == 0


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _operand(t: Tensor) -> Tensor:
    """``t`` contiguous with a 16-byte aligned base (a copy when it is not)."""
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


def dense_fm_linear_sm90(x: Tensor, weight: Tensor, bias: Optional[Tensor], activation: str,
                         config: str, out: Optional[Tensor] = None) -> Tensor:
    """``activation(weight @ x + bias[:, None])`` for ``x [K, M]``, ``weight [N, K]`` (fp16
    or bf16, CUDA) with the configuration named ``config`` (one of :func:`config_names`).
    Returns a contiguous ``[N, M]`` tensor (``out`` when given)."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"sm90 dense kernel unavailable: {why_not()}")
    names = config_names()
    if config not in names:
        raise ValueError(f"unknown sm90 dense config {config!r}; have {names}")
    if activation not in ACT_CODES:
        raise ValueError(f"unsupported activation {activation!r}")
    K, M = x.shape
    N = weight.shape[0]
    if weight.shape[1] != K:
        raise ValueError(f"weight is {tuple(weight.shape)}, x is {tuple(x.shape)}")
    if x.dtype not in DTYPE_CODES or weight.dtype != x.dtype:
        raise TypeError("sm90 dense kernel: x and weight must share fp16 or bf16")
    if not supports(M, K):
        raise ValueError(f"sm90 dense kernel: M={M} and K={K} must be multiples of 8")
    if out is None:
        out = torch.empty(N, M, dtype=x.dtype, device=x.device)
    elif not out.is_contiguous() or out.shape != (N, M) or out.data_ptr() % 16:
        raise ValueError("out must be a contiguous, 16-byte aligned [N, M] tensor")
    if N == 0:
        return out
    x, weight = _operand(x), _operand(weight)
    if bias is not None:
        bias = _operand(bias.to(x.dtype))
    index, dtype, act = names.index(config), DTYPE_CODES[x.dtype], ACT_CODES[activation]
    device = x.device.index if x.device.index is not None else torch.cuda.current_device()
    sms = _sm_count(device)
    need = _workspace_bytes(index, dtype, act, N, K, M, sms)
    workspace = torch.empty(need, dtype=torch.uint8, device=x.device) if need else None
    stream = _raw_stream(device) if _raw_stream is not None else \
        torch.cuda.current_stream(x.device).cuda_stream
    _check(lib, lib.sfx_dense_fm_sm90(
        index, dtype, act, weight.data_ptr(), x.data_ptr(),
        0 if bias is None else bias.data_ptr(), out.data_ptr(), N, K, M,
        0 if workspace is None else workspace.data_ptr(), need, sms, stream))
    return out


def native_entry(config: str, x: Tensor, weight: Tensor, activation: str) \
        -> Optional[tuple[int, int, int, int]]:
    """What the C++ eager path (csrc/eager_fastpath.cpp) needs to run this call itself:
    (address of ``sfx_dense_fm_sm90``, configuration index, dtype code, SM count); None
    when the library is not loaded, the call does not fit the kernels, or the
    configuration would need a workspace (which only this module allocates)."""
    lib = library()
    names = config_names()
    if lib is None or config not in names or x.dtype not in DTYPE_CODES \
            or weight.dtype != x.dtype or activation not in ACT_CODES or x.dim() != 2 \
            or not supports(x.shape[1], x.shape[0]):
        return None
    device = x.device.index if x.device.index is not None else torch.cuda.current_device()
    index, dtype, sms = names.index(config), DTYPE_CODES[x.dtype], _sm_count(device)
    K, M = x.shape
    if _workspace_bytes(index, dtype, ACT_CODES[activation], weight.shape[0], K, M, sms):
        return None
    entry = ctypes.cast(lib.sfx_dense_fm_sm90, ctypes.c_void_p).value
    return entry, index, dtype, sms


@functools.lru_cache(maxsize=256)
def _workspace_bytes(index: int, dtype: int, act: int, N: int, K: int, M: int,
                     sms: int) -> int:
    """Device workspace the configuration needs for this problem (0 for the persistent
    schedulers compiled today; asked anyway, so a new configuration cannot overrun)."""
    lib = library()
    need = ctypes.c_ulonglong(0)
    _check(lib, lib.sfx_dense_fm_sm90_workspace(index, dtype, act, N, K, M, sms,
                                                ctypes.byref(need)))
    return need.value


def _check(lib: ctypes.CDLL, code: int) -> None:
    if code != 0:
        msg = lib.sfx_dense_fm_sm90_error(code).decode()
        raise RuntimeError(f"sfx_dense_fm_sm90 failed ({code}): {msg}")


__all__ = ["available", "why_not", "config_names", "supports", "dense_fm_linear_sm90",
           "native_entry", "library", "extra_flags", "cutlass_root", "VARIANT_PREFIX"]
