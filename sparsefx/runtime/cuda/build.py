"""Build and load the CUDA C++ kernels in ``csrc/`` (nvcc → shared library → ctypes).

Why ctypes and not a torch C++ extension: the kernels take raw device pointers and a
stream, so they need no torch headers; one ``nvcc`` call of a few seconds builds them,
and the library does not depend on the torch build it was compiled against. The Python
side (a ``torch.library`` custom op) owns shapes, dtypes, allocation and the stream.

Where the library comes from, in order:

1. ``$SPARSEFX_CACHE_DIR/build/<name>-<hash>.so`` (default ``~/.cache/sparsefx``), where
   ``<hash>`` covers the source text, the flags, the target architecture and the nvcc
   version — a changed kernel or toolkit never reuses a stale binary;
2. otherwise it is built there with ``nvcc`` (``$CUDA_HOME/bin/nvcc``, or ``nvcc`` on
   ``PATH``), written atomically so concurrent processes never load half a file.

Nothing here runs at import time. :func:`load` returns ``None`` (and :func:`why_not`
says why) when there is no GPU, no nvcc, the GPU's architecture has no kernel, the build
fails, or ``SPARSEFX_DISABLE_CUDA_EXT`` is ``1`` (all libraries) or a comma-separated
list of library names (e.g. ``tile_linear_sm90``): callers then fall back to the Triton kernels
or the CPU reference. The build error text is kept for :func:`why_not`, never swallowed
silently.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path
from typing import Optional, Sequence

import torch

DISABLE_ENV = "SPARSEFX_DISABLE_CUDA_EXT"
CACHE_ENV = "SPARSEFX_CACHE_DIR"

#: csrc/ sits next to the package in a source checkout (``pip install -e .``)
CSRC_DIR = Path(__file__).resolve().parents[3] / "csrc"

_lock = threading.Lock()
_loaded: dict[str, Optional[ctypes.CDLL]] = {}
_reasons: dict[str, str] = {}


def why_not(name: str) -> Optional[str]:
    """Why :func:`load` returned ``None`` for ``name`` (``None`` if it loaded or was
    never asked for)."""
    return _reasons.get(name)


def nvcc_path() -> Optional[str]:
    """The nvcc to use: ``$CUDA_HOME/bin/nvcc`` if present, else the one on ``PATH``."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").exists():
        return str(Path(home) / "bin" / "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.exists() else None


def gencode_for(capability: tuple[int, int]) -> Optional[list[str]]:
    """nvcc target flags for a compute capability. Hopper (9.0) gets ``sm_90a``, the
    architecture-specific target that ``wgmma`` and ``setmaxnreg`` need (HOPPER.md: the
    ``-gencode`` form, not ``-arch=sm_90a``)."""
    major, minor = capability
    if (major, minor) == (9, 0):
        return ["-gencode=arch=compute_90a,code=sm_90a"]
    return [f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}"]


def compile_flags(capability: tuple[int, int], extra_flags: Sequence[str] = ()) -> list[str]:
    """nvcc flags for a shared library of kernels for ``capability``."""
    return ["-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "-lineinfo",
            "--expt-relaxed-constexpr", *gencode_for(capability), *extra_flags]


def compile_library(sources: Sequence[str], target: Path, capability: tuple[int, int],
                    extra_flags: Sequence[str] = ()) -> None:
    """Compile ``csrc/<sources>`` into ``target`` for ``capability`` (no GPU needed);
    raises ``RuntimeError`` with nvcc's output when it fails."""
    nvcc = nvcc_path()
    if nvcc is None:
        raise RuntimeError("nvcc not found")
    try:
        _compile(nvcc, [CSRC_DIR / s for s in sources], compile_flags(capability, extra_flags),
                 Path(target))
    except _Unavailable as exc:
        raise RuntimeError(str(exc)) from exc


def build_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "sparsefx")
    return Path(root) / "build"


def load(name: str, sources: Sequence[str], extra_flags: Sequence[str] = (),
         capability: Optional[tuple[int, int]] = None,
         required_capability: Optional[tuple[int, int]] = None) -> Optional[ctypes.CDLL]:
    """Build (once) and load ``csrc/<sources>`` as one shared library named ``name``.

    ``required_capability``: the kernels are written for exactly this architecture
    (e.g. ``(9, 0)`` for wgmma/TMA code); other GPUs get ``None`` without building.
    Returns the ``ctypes.CDLL`` or ``None`` (see :func:`why_not`)."""
    with _lock:
        if name in _loaded:
            return _loaded[name]
        lib = None
        try:
            lib = _build_and_load(name, sources, extra_flags, capability,
                                  required_capability)
        except _Unavailable as exc:
            _reasons[name] = str(exc)
        _loaded[name] = lib
        return lib


def disabled(name: str) -> Optional[str]:
    """Why ``$SPARSEFX_DISABLE_CUDA_EXT`` turns library ``name`` off, or ``None``."""
    value = os.environ.get(DISABLE_ENV, "")
    if value in ("1", "all") or name in value.split(","):
        return f"disabled by {DISABLE_ENV}={value}"
    return None


class _Unavailable(RuntimeError):
    """The library cannot be had here; the message says why."""


def _build_and_load(name, sources, extra_flags, capability, required_capability):
    reason = disabled(name)
    if reason:
        raise _Unavailable(reason)
    if not torch.cuda.is_available():
        raise _Unavailable("no CUDA device")
    cap = capability or torch.cuda.get_device_capability()
    if required_capability is not None and tuple(cap) != tuple(required_capability):
        raise _Unavailable(f"kernels need compute capability {required_capability}, "
                           f"this GPU is {tuple(cap)}")
    paths = [CSRC_DIR / s for s in sources]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise _Unavailable(f"CUDA sources not found: {missing} (csrc/ ships with a source "
                           "checkout; install with `pip install -e .`)")
    nvcc = nvcc_path()
    if nvcc is None:
        raise _Unavailable("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    flags = compile_flags(tuple(cap), extra_flags)
    target = build_dir() / f"{name}-{_digest(paths, flags, nvcc)}.so"
    if not target.exists():
        _compile(nvcc, paths, flags, target)
    try:
        return ctypes.CDLL(str(target))
    except OSError as exc:
        raise _Unavailable(f"built {target} but could not load it: {exc}") from exc


def _digest(paths, flags, nvcc) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    # headers next to the sources are part of the build too
    for hdr in sorted(CSRC_DIR.glob("*.cuh")) + sorted(CSRC_DIR.glob("*.h")):
        h.update(hdr.read_bytes())
    h.update(" ".join(flags).encode())
    h.update(_nvcc_version(nvcc).encode())
    return h.hexdigest()[:16]


def _nvcc_version(nvcc: str) -> str:
    try:
        return subprocess.run([nvcc, "--version"], capture_output=True, text=True,
                              timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise _Unavailable(f"{nvcc} --version failed: {exc}") from exc


def _compile(compiler, paths, flags, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}.so")
    cmd = [compiler, *map(str, paths), *flags, "-o", str(tmp)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        raise _Unavailable(f"{compiler} could not run: {exc}") from exc
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise _Unavailable(f"{Path(compiler).name} failed:\n" + " ".join(cmd) + "\n" +
                           (res.stderr or res.stdout)[-4000:])
    os.replace(tmp, target)     # atomic: readers see the old name or the whole file


# --------------------------------------------------------------------------- torch modules
def load_torch_module(name: str, source: str):
    """Build (once) and import ``csrc/<source>``: a C++ Python module that links against
    the running torch (``PYBIND11_MODULE(name, ...)``), e.g. an operator's CUDA kernel
    written in C++. Unlike the kernel libraries above it depends on the torch build, so
    the cache key covers torch's version and location and Python's version too.

    Returns the module or ``None`` (see :func:`why_not`): no GPU, no C++ compiler, no
    CUDA headers, disabled by ``SPARSEFX_DISABLE_CUDA_EXT``, or the build failed."""
    with _lock:
        if name in _loaded:
            return _loaded[name]
        module = None
        try:
            module = _build_and_import(name, source)
        except _Unavailable as exc:
            _reasons[name] = str(exc)
        _loaded[name] = module
        return module


def cuda_include_dir() -> Optional[Path]:
    """The CUDA toolkit's include directory (``cuda.h``, ``cuda_runtime.h``):
    ``$CUDA_HOME/include``, next to nvcc, or ``/usr/local/cuda/include``."""
    candidates = []
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        candidates.append(Path(home) / "include")
    nvcc = nvcc_path()
    if nvcc is not None:
        candidates.append(Path(nvcc).resolve().parent.parent / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    for inc in candidates:
        if (inc / "cuda.h").exists() and (inc / "cuda_runtime.h").exists():
            return inc
    return None


def torch_module_flags(name: str) -> list[str]:
    """Compiler and linker flags of a C++ module ``name`` built against this torch
    (the same defines and libraries ``torch.utils.cpp_extension`` uses)."""
    torch_dir = Path(torch.__file__).resolve().parent
    abi = int(bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True)))
    flags = ["-O2", "-std=c++20", "-shared", "-fPIC", "-fvisibility=hidden",
             f"-DTORCH_EXTENSION_NAME={name}", "-DTORCH_API_INCLUDE_EXTENSION_H",
             f"-D_GLIBCXX_USE_CXX11_ABI={abi}"]
    for attr in ("COMPILER_TYPE", "STDLIB", "BUILD_ABI"):   # older torch builds pin these
        value = getattr(torch._C, f"_PYBIND11_{attr}", None)
        if value is not None:
            flags.append(f'-DPYBIND11_{attr}="{value}"')
    includes = [torch_dir / "include", torch_dir / "include" / "torch" / "csrc" / "api" /
                "include", Path(sysconfig.get_paths()["include"])]
    cuda_inc = cuda_include_dir()
    if cuda_inc is not None:
        includes.append(cuda_inc)
    flags += [f"-I{p}" for p in includes]
    lib_dir = torch_dir / "lib"
    flags += [f"-L{lib_dir}", f"-Wl,-rpath,{lib_dir}", "-lc10", "-lc10_cuda", "-ltorch_cpu",
              "-ltorch_python", "-ldl"]
    return flags


def _build_and_import(name: str, source: str):
    reason = disabled(name)
    if reason:
        raise _Unavailable(reason)
    if not torch.cuda.is_available():
        raise _Unavailable("no CUDA device")
    path = CSRC_DIR / source
    if not path.exists():
        raise _Unavailable(f"source not found: {path} (csrc/ ships with a source checkout; "
                           "install with `pip install -e .`)")
    if cuda_include_dir() is None:
        raise _Unavailable("CUDA headers (cuda.h) not found next to nvcc; set CUDA_HOME")
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        raise _Unavailable("no C++ compiler (set CXX or put c++ on PATH)")
    flags = torch_module_flags(name)
    h = hashlib.sha256(path.read_bytes())
    h.update(" ".join([cxx, *flags, torch.__version__, str(torch.__file__),
                       sys.version]).encode())
    target = build_dir() / f"{name}-{h.hexdigest()[:16]}{_module_suffix()}"
    if not target.exists():
        _compile(cxx, [path], flags, target)
    spec = importlib.util.spec_from_file_location(name, target)
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise _Unavailable(f"built {target} but could not import it: {exc}") from exc
    return module


def _module_suffix() -> str:
    return sysconfig.get_config_var("EXT_SUFFIX") or ".so"


__all__ = ["load", "load_torch_module", "why_not", "nvcc_path", "gencode_for",
           "compile_flags", "compile_library", "torch_module_flags", "cuda_include_dir",
           "build_dir", "CSRC_DIR"]
