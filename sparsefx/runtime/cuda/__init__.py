"""CUDA kernels for the sparsefx ops (Triton), registered on top of the references.

Import-safe everywhere: on a machine without CUDA or without triton nothing here
touches either, and :func:`register_cuda_kernels` returns False, leaving the pure
PyTorch references in :mod:`sparsefx.runtime.ops` in charge.

Usage (the runtime package calls this once at import)::

    from sparsefx.runtime.cuda import register_cuda_kernels
    register_cuda_kernels()          # True when the Triton kernels are now active

Per-layer kernel choice lives in :mod:`sparsefx.runtime.cuda.dispatch`
(``decide``, ``decisions``, ``clear_decisions``); import it only when
:func:`available` is True.
"""
from __future__ import annotations

import importlib.util

_registered = False


def available() -> bool:
    """True when CUDA is usable and triton is importable (without importing it twice)."""
    try:
        import torch
        if not torch.cuda.is_available():
            return False
    except Exception:
        return False
    return importlib.util.find_spec("triton") is not None


def register_cuda_kernels() -> bool:
    """Register the Triton implementation of ``sparsefx::tile_linear`` for CUDA.

    Returns False (and does nothing) when CUDA or triton is missing, True once the
    kernel is registered. Safe to call more than once.
    """
    global _registered
    if _registered:
        return True
    if not available():
        return False
    try:
        from sparsefx.runtime.cuda.dispatch import tile_linear_cuda
    except ImportError:          # a triton too old or broken to import
        return False
    from sparsefx.runtime.cuda import autograd_shortcut
    from sparsefx.runtime.ops import tile_linear
    # the CUDA kernel, plus a short path past the custom-op wrappers for plain eager
    # calls (bench/profile_host.py: ~40 µs of host time per call otherwise)
    autograd_shortcut.install(tile_linear, tile_linear_cuda)
    _registered = True
    return True


__all__ = ["available", "register_cuda_kernels"]
