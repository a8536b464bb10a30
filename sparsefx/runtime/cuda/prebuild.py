"""Build the CUDA C++ kernel libraries now, instead of at the first call that needs one.

Why: the first call that needs a library in ``csrc/`` compiles it with nvcc (the Hopper
tile kernel takes about a minute; the eager C++ path of ``tile_linear``, built with the
C++ compiler against the running torch, tens of seconds; the CUTLASS dense GEMM a few
minutes), which stalls that call and makes a CUDA-graph capture
or a latency measurement taken right after it misleading. Run this once per machine
(the result is cached under ``$SPARSEFX_CACHE_DIR/build/``)::

    python -m sparsefx.runtime.cuda.prebuild

It prints one line per library: where it was loaded from, or why it is not available
here (no GPU, no nvcc, another GPU architecture, a build error). The exit status is 0
unless a library that applies to this GPU failed to build.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

from sparsefx.runtime.cuda import build


def _libraries() -> dict[str, Callable]:
    """Library name -> the loader its runtime module uses (declares the signatures)."""
    from sparsefx.runtime import norm_cuda
    from sparsefx.runtime.cuda import eager_fastpath, sm90_dense, sm90_tile
    return {sm90_tile.LIB_NAME: sm90_tile.library, norm_cuda.LIB_NAME: norm_cuda.load_library,
            sm90_dense.LIB_NAME: sm90_dense.library,
            eager_fastpath.MODULE: lambda: build.load_torch_module(eager_fastpath.MODULE,
                                                                   eager_fastpath.SOURCE)}


def prebuild() -> dict[str, str]:
    """Build and load every library; returns ``{name: status line}``."""
    status = {}
    for name, loader in _libraries().items():
        start = time.perf_counter()
        lib = loader()
        if lib is not None:
            where = getattr(lib, "_name", None) or getattr(lib, "__file__", "")
            status[name] = f"ok ({time.perf_counter() - start:.1f} s): {where}"
        else:
            status[name] = f"not available: {_why_not(name)}"
    return status


def _why_not(name: str) -> str:
    from sparsefx.runtime.cuda import sm90_dense
    return (sm90_dense.why_not() if name == sm90_dense.LIB_NAME else build.why_not(name)) \
        or "unknown"


def _failed(line: str) -> bool:
    """A build that should have worked here: not one skipped for a reason that is
    simply this machine's (no GPU, no nvcc, other architecture, disabled)."""
    skipped = ("no CUDA device", "nvcc not found", "compute capability", "disabled by",
               "sources not found", "source not found", "no C++ compiler",
               "CUDA headers", "CUTLASS headers not found")
    return not line.startswith("ok") and not any(s in line for s in skipped)


def main() -> int:
    status = prebuild()
    for name, line in status.items():
        print(f"{name}: {line}")
    return 1 if any(_failed(line) for line in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
