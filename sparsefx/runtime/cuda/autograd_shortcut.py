"""A short eager path from the dispatcher to a custom op's CUDA kernel.

Why: a :func:`torch.library.custom_op` call on CUDA tensors runs two Python layers
before the kernel — the op's autograd kernel (it checks every argument for
``requires_grad`` and redispatches) and ``backend_impl`` (it checks that the output
does not alias an input; our kernels always return a fresh tensor). On the H200 host
that cost about 40 µs per call, twice what ``F.linear`` costs in total
(bench/profile_host.py, 2026-11-22), so eager inference of µs-size layers was
host-bound.

:func:`install` registers the CUDA implementation for the ``CUDA`` dispatch key (no
``backend_impl`` wrapper; this is also what runs under ``torch.inference_mode``, which
skips autograd keys) and a kernel for the ``AutogradCUDA`` key that calls it directly
when nothing needs the general path: plain tensors (no
subclass such as ``FakeTensor``), no ``__torch_dispatch__`` mode, no functorch
transform, and no argument that requires grad while grad mode is on. Every other call
goes to the op's own autograd kernel, unchanged — so ``torch.compile``, ``torch.export``,
fake tensors and backward behave exactly as before.

The general path is built with ``torch._library.autograd.make_autograd_impl``, the
function ``custom_op`` itself uses; where it is missing :func:`install` falls back to
``op_def.register_kernel("cuda")`` and returns False (slower, never wrong).

:func:`hand_backend_to_native` later gives the ``backend`` key to a kernel registered
from C++ (e.g. ``csrc/eager_fastpath.cpp``) and points the shortcut at its Python
binding.
"""
from __future__ import annotations

from typing import Callable

import torch

_libraries: list = []        # keep the registrations alive
#: (op name, backend) -> [Library holding the backend kernel, [kernel the shortcut calls]]
_installed: dict[tuple, list] = {}


def install(op_def, kernel: Callable, backend: str = "CUDA") -> bool:
    """Route plain eager ``backend`` calls of custom op ``op_def`` straight to ``kernel``.

    ``op_def`` is the :class:`torch._library.custom_ops.CustomOpDef` (with its autograd
    registered); ``kernel`` its implementation for ``backend`` (a dispatch key with an
    ``Autograd<backend>`` partner: "CUDA"; the tests use "CPU"). Returns True when the
    shortcut is installed. Call it at most once per op and backend."""
    general = _general_autograd(op_def)
    if general is None:
        op_def.register_kernel(backend.lower())(kernel)
        return False
    namespace, name = op_def._qualname.split("::")
    target = [kernel]        # a cell, so hand_backend_to_native can repoint it

    def autograd_backend(keyset, *args, **kwargs):
        if _plain_call(args, kwargs):
            return target[0](*args, **kwargs)
        return general(keyset, *args, **kwargs)

    backend_lib = torch.library.Library(namespace, "IMPL")
    backend_lib.impl(name, kernel, backend)
    autograd_lib = torch.library.Library(namespace, "IMPL")
    autograd_lib.impl(name, autograd_backend, "Autograd" + backend, with_keyset=True)
    _libraries.append(autograd_lib)
    _installed[(op_def._qualname, backend)] = [backend_lib, target]
    return True


def hand_backend_to_native(op_def, register_native: Callable[[], None],
                           binding: Callable, backend: str = "CUDA") -> bool:
    """Put a kernel that ``register_native()`` registers from C++ for ``backend`` in
    front of the Python one :func:`install` registered, and make the shortcut call
    ``binding`` (that kernel's Python binding) for plain calls.

    The Python kernel stays registered underneath: the dispatcher keeps every kernel
    registered for a key and runs the newest, so nothing a call in flight is executing
    is freed (this may run inside a call of the op itself). Returns False (and changes
    nothing) when :func:`install` did not install the shortcut for this op and
    backend."""
    entry = _installed.get((op_def._qualname, backend))
    if entry is None:
        return False
    register_native()
    entry[1][0] = binding
    return True


def _general_autograd(op_def):
    try:
        from torch._library.autograd import make_autograd_impl
        return make_autograd_impl(op_def._opoverload, op_def)
    except (ImportError, AttributeError, TypeError):
        return None


def _plain_call(args: tuple, kwargs: dict) -> bool:
    """True when the call can skip autograd and every tracing machinery: real tensors
    only, no dispatch mode, no functorch transform, no gradient wanted."""
    if kwargs or torch._C._len_torch_dispatch_stack() or \
            torch._C._are_functorch_transforms_active():
        return False
    grad_on = torch.is_grad_enabled()
    for a in args:
        if isinstance(a, torch.Tensor) and (type(a) not in _PLAIN or
                                            (grad_on and a.requires_grad)):
            return False
    return True


#: tensor types that dispatch like a plain tensor (Parameter disables torch_function)
_PLAIN = (torch.Tensor, torch.nn.Parameter)


__all__ = ["install"]
