"""Low-overhead relaunch of Triton kernels that were already compiled.

Why: ``kernel[grid](*args, **constexprs)`` binds and specialises every argument again on
each call before it looks the compiled kernel up; on the H200 host that cost 33 µs per
launch, against 9 µs for the launch itself (bench/profile_host.py, 2026-11-22). A
µs-size layer run eagerly is host-bound, so this overhead was most of its time.

:func:`launch` keeps the :class:`CompiledKernel` that the first ordinary launch returns,
keyed by everything Triton specialises on — the scalar values themselves (exact, so their
divisibility and width are the same), the tensors' dtypes and whether each pointer is
16-byte aligned, the constexprs, the launch options and the device — and relaunches it
the way ``JITFunction.run`` does after its cache hit (same launcher call, same launch
hooks and launch metadata). Anything unusual takes the ordinary path: the Triton
interpreter, a Triton without ``knobs`` or a launcher this module does not know.

A caller that repeats one launch many times (an eager layer) can go one step further:
describe the launch as a :class:`KernelLaunch`, run it once, then :meth:`prepare
<KernelLaunch.prepare>` a :class:`Relaunch` that fixes everything but the tensors and
checks per call only what can change with them.

Kernels launched here take their arguments in the order tensors (or host tensor
descriptors), scalars, constexprs (every sparsefx Triton kernel does).

Importable without triton (then :data:`DIRECT` is False); only :func:`launch` runs
kernels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

try:                                   # triton >= 3.4 keeps launch hooks in knobs
    from triton import knobs as _knobs
except ImportError:                    # pragma: no cover - older triton
    _knobs = None

try:
    from torch._C import _cuda_getCurrentRawStream as _raw_stream
    from torch._C import _cuda_getDevice as _current_device
except ImportError:                    # CPU-only torch (the interpreter): ordinary path
    _raw_stream = None

    def _current_device() -> int:
        return -1


#: whether relaunches may bypass ``kernel[grid]`` (a known launcher, a CUDA torch)
DIRECT = _knobs is not None and _raw_stream is not None

_MAX_ENTRIES = 4096
#: key -> (CompiledKernel, constexpr values in signature order), or None when that
#: launch must always go through ``kernel[grid]`` (e.g. the interpreter)
_compiled: dict[tuple, Any] = {}


def launch(fn, grid: Sequence[int], tensors: Sequence[torch.Tensor],
           scalars: Sequence[Any], constexprs: dict, **options) -> None:
    """Launch ``fn[grid](*tensors, *scalars, **constexprs, **options)``, reusing the
    compiled kernel of an earlier launch with the same specialisation.

    ``options`` are Triton launch options such as ``num_warps`` and ``num_stages``."""
    key = _key(fn, tensors, scalars, constexprs, options)
    entry = _compiled.get(key, False)
    if entry is False or entry is None or not DIRECT:
        compiled = fn[grid](*tensors, *scalars, **constexprs, **options)
        if entry is False:
            _remember(key, fn, compiled, len(tensors) + len(scalars), constexprs)
        return
    kernel, tail = entry
    _run(kernel, _grid3(grid), key[1], (*tensors, *scalars, *tail))


@dataclass(frozen=True)
class KernelLaunch:
    """One launch, described: the arguments of :func:`launch`. Lets a caller both run
    it and :meth:`prepare` a :class:`Relaunch` of it."""

    fn: Any
    grid: tuple
    tensors: tuple
    scalars: tuple
    constexprs: dict
    options: dict

    def run(self) -> None:
        launch(self.fn, self.grid, self.tensors, self.scalars, self.constexprs,
               **self.options)

    def prepare(self) -> Optional["Relaunch"]:
        """A :class:`Relaunch` of this launch with every scalar, constexpr and option
        fixed, or None when there is none to reuse: the launch has not run yet (nothing
        compiled and kept), it always takes the ordinary path (the interpreter, an
        unknown launcher), or an argument is a host tensor descriptor."""
        if not DIRECT or not all(isinstance(t, torch.Tensor) for t in self.tensors):
            return None
        key = _key(self.fn, self.tensors, self.scalars, self.constexprs, self.options)
        entry = _compiled.get(key)
        if not entry:
            return None
        kernel, tail = entry
        return Relaunch(kernel, _grid3(self.grid), key[1], (*self.scalars, *tail),
                        tuple(_tensor_key(t) for t in self.tensors))


class Relaunch:
    """A compiled kernel with its grid, scalars and constexprs fixed; call it with the
    tensors. Why: even :func:`launch` rebuilds its cache key from every argument on each
    call (~4 µs on the H200 host for a nine-tensor kernel, bench/profile_host.py); an
    eager layer that repeats one launch needs only check what can differ per call.

    A call checks what the kept kernel was specialised on that can change with the
    tensors (dtype and 16-byte alignment of each) and the current device, and returns
    False without launching when one differs: the caller then takes the ordinary
    path."""

    __slots__ = ("kernel", "grid3", "device", "tail", "tensor_keys")

    def __init__(self, kernel, grid3: tuple, device: int, tail: tuple, tensor_keys: tuple):
        self.kernel, self.grid3, self.device = kernel, grid3, device
        self.tail, self.tensor_keys = tail, tensor_keys

    def __call__(self, tensors: Sequence[torch.Tensor]) -> bool:
        if len(tensors) != len(self.tensor_keys) or _current_device() != self.device:
            return False
        for t, (dtype, aligned) in zip(tensors, self.tensor_keys):
            if t.dtype != dtype or (t.data_ptr() % 16 == 0) != aligned:
                return False
        _run(self.kernel, self.grid3, self.device, (*tensors, *self.tail))
        return True


def _grid3(grid: Sequence[int]) -> tuple:
    return (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)


def _run(kernel, grid3: tuple, device: int, args: tuple) -> None:
    """Launch a kept CompiledKernel the way ``JITFunction.run`` does after its cache
    hit: on the current stream, with the same launch hooks and launch metadata."""
    stream = _raw_stream(device)
    runtime = _knobs.runtime
    metadata = kernel.launch_metadata(grid3, stream, *args)
    kernel.run(grid3[0], grid3[1], grid3[2], stream, kernel.function,
               kernel.packed_metadata, metadata, runtime.launch_enter_hook,
               runtime.launch_exit_hook, *args)


def next_power_of_2(n: int) -> int:
    """Smallest power of 2 >= ``n`` (1 for n <= 1), on the host: triton's own
    ``next_power_of_2`` is a jit function that costs microseconds per call."""
    return 1 << max(0, int(n) - 1).bit_length()


def clear() -> None:
    """Forget every kept kernel (the next launches take the ordinary path once)."""
    _compiled.clear()


def _key(fn, tensors, scalars, constexprs, options) -> tuple:
    # scalars go in by value, which fixes every property Triton derives from them
    return (fn, _current_device(), tuple(scalars), tuple(constexprs.values()),
            tuple(options.values()), tuple([_tensor_key(t) for t in tensors]))


def _tensor_key(t) -> tuple:
    """What Triton specialises a tensor argument on: dtype and 16-byte alignment; for a
    host tensor descriptor (``triton.tools.tensor_descriptor.TensorDescriptor``, whose
    base and strides are 16-byte aligned by construction) its dtype, block shape and
    padding. The launcher encodes a descriptor's address, shape and strides per call."""
    if isinstance(t, torch.Tensor):
        return (t.dtype, t.data_ptr() % 16 == 0)
    return (type(t).__name__, t.base.dtype, tuple(t.block_shape),
            getattr(t, "padding", None))


def _remember(key, fn, compiled, n_leading: int, constexprs: dict) -> None:
    """Keep ``compiled`` for ``key`` when it is a launchable CompiledKernel whose
    signature is ``n_leading`` runtime arguments followed by ``constexprs``."""
    if len(_compiled) >= _MAX_ENTRIES:
        _compiled.clear()
    names = list(getattr(fn, "arg_names", ()))
    usable = (all(hasattr(compiled, a) for a in ("run", "function", "packed_metadata",
                                                 "launch_metadata"))
              and names[n_leading:] == list(constexprs))
    _compiled[key] = (compiled, tuple(constexprs.values())) if usable else None


__all__ = ["launch", "KernelLaunch", "Relaunch", "clear", "next_power_of_2"]
