"""The eager shortcut past a custom op's Python wrappers (runtime/cuda/autograd_shortcut).

It is installed for CUDA in the package; here it is installed for the CPU backend on a
small custom op of its own, so that every rule can be checked without a GPU: plain
calls reach the kernel directly, anything needing autograd or tracing takes the op's
general path, and the numbers are the same either way.
"""
from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sparsefx.runtime.cuda import autograd_shortcut

calls: list[str] = []


@torch.library.custom_op("sfxtest_shortcut::scaled_add", mutates_args=())
def scaled_add(x: torch.Tensor, w: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    return x * w + alpha


@scaled_add.register_fake
def _(x, w, alpha=2.0):
    return torch.empty_like(x)


def _backward(ctx, grad):
    x, w = ctx.saved_tensors
    return grad * w, grad * x, None


def _setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1])


scaled_add.register_autograd(_backward, setup_context=_setup)


def cpu_kernel(x, w, alpha=2.0):
    """The 'fast' implementation: records whether the op's autograd kernel (the
    general path, torch/_library/autograd.py) is on the Python stack."""
    general = any(f.filename.replace("\\", "/").endswith("_library/autograd.py")
                  for f in inspect.stack(0))
    calls.append("general" if general else "shortcut")
    return x * w + alpha


INSTALLED = autograd_shortcut.install(scaled_add, cpu_kernel, backend="CPU")
op = torch.ops.sfxtest_shortcut.scaled_add


@pytest.fixture(autouse=True)
def _clear_calls():
    calls.clear()
    yield


def fresh(*shape, requires_grad=False):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=requires_grad)


def test_installed():
    assert INSTALLED, "torch no longer has make_autograd_impl: the shortcut is off"


def test_plain_call_skips_autograd_and_matches():
    x, w = fresh(5, 3), fresh(5, 3)
    out = op(x, w, 0.5)
    assert calls == ["shortcut"]
    torch.testing.assert_close(out, x * w + 0.5, rtol=0, atol=0)
    op(x, w)                                    # default alpha dropped by the dispatcher
    assert calls == ["shortcut", "shortcut"]


def test_parameters_under_no_grad_take_the_shortcut():
    w = torch.nn.Parameter(fresh(4))
    x = fresh(4)
    with torch.no_grad():
        out = op(x, w)
    assert calls == ["shortcut"] and not out.requires_grad


def test_gradients_take_the_general_path():
    x, w = fresh(6, requires_grad=True), fresh(6, requires_grad=True)
    out = op(x, w, 1.5)
    assert calls == ["general"] and out.requires_grad
    out.sum().backward()
    torch.testing.assert_close(x.grad, w.detach())
    torch.testing.assert_close(w.grad, x.detach())


def test_dispatch_mode_sees_the_op():
    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    x, w = fresh(3), fresh(3)
    with Record():
        out = op(x, w)
    assert any("sfxtest_shortcut.scaled_add" in s for s in seen)
    torch.testing.assert_close(out, x * w + 2.0)


def test_fake_tensors_use_the_fake_kernel():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        x = mode.from_tensor(fresh(2, 7))
        out = op(x, x)
    assert calls == [] and out.shape == (2, 7)


def test_export_keeps_the_op():
    class M(torch.nn.Module):
        def forward(self, x, w):
            return op(x, w, 3.0)

    x, w = fresh(4, 2), fresh(4, 2)
    ep = torch.export.export(M(), (x, w))
    assert "sfxtest_shortcut.scaled_add" in str(ep.graph)
    torch.testing.assert_close(ep.module()(x, w), x * w + 3.0)


def test_inference_mode_runs_the_kernel():
    x, w = fresh(3), fresh(3)
    with torch.inference_mode():
        out = op(x, w)
    # autograd keys are skipped entirely: the backend kernel is called by the dispatcher
    assert calls == ["shortcut"]
    torch.testing.assert_close(out, x * w + 2.0)


# --------------------------------------------------------------------------- hand-off
@torch.library.custom_op("sfxtest_shortcut::scaled_mul", mutates_args=())
def scaled_mul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return 3.0 * x * w


@scaled_mul.register_fake
def _(x, w):
    return torch.empty_like(x)


def _mul_backward(ctx, grad):
    x, w = ctx.saved_tensors
    return 3.0 * grad * w, 3.0 * grad * x


scaled_mul.register_autograd(_mul_backward, setup_context=_setup)


def test_hand_off_to_a_native_kernel():
    """After ``hand_backend_to_native`` the dispatcher runs the newly registered kernel
    (standing in for the C++ one) and plain calls reach its binding; gradients still
    take the general path, which redispatches to the new kernel; an op the shortcut was
    never installed for is refused."""
    ran = []

    def python_kernel(x, w):
        ran.append("python")
        return 3.0 * x * w

    def native_kernel(x, w):
        ran.append("native")
        return 3.0 * x * w

    def binding(x, w):
        ran.append("binding")
        return native_kernel(x, w)

    assert autograd_shortcut.install(scaled_mul, python_kernel, backend="CPU")
    mul = torch.ops.sfxtest_shortcut.scaled_mul
    x, w = fresh(5), fresh(5)
    mul(x, w)
    assert ran == ["python"]
    native_lib = torch.library.Library("sfxtest_shortcut", "IMPL")

    def register_native():
        with warnings.catch_warnings():     # "overriding a previously registered kernel"
            warnings.simplefilter("ignore")
            native_lib.impl("scaled_mul", native_kernel, "CPU")

    assert autograd_shortcut.hand_backend_to_native(scaled_mul, register_native, binding,
                                                    backend="CPU")
    ran.clear()
    torch.testing.assert_close(mul(x, w), 3.0 * x * w)
    with torch.inference_mode():
        torch.testing.assert_close(mul(x, w), 3.0 * x * w)
    assert ran == ["binding", "native", "native"]
    ran.clear()
    xg, wg = fresh(5, requires_grad=True), fresh(5, requires_grad=True)
    mul(xg, wg).sum().backward()
    assert ran == ["native"]
    torch.testing.assert_close(xg.grad, 3.0 * wg.detach())
    assert not autograd_shortcut.hand_backend_to_native(scaled_mul, register_native,
                                                        binding, backend="Meta")
    native_lib._destroy()
