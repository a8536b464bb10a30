"""sparsefx::bias_residual_layernorm: reference vs float64 F.layer_norm, opcheck, autograd."""
import importlib.util

import pytest
import torch
import torch.nn.functional as F

import sparsefx  # noqa: F401
from sparsefx.runtime import norm_ops
from sparsefx_testing import run_in_triton_interpreter

op = torch.ops.sparsefx.bias_residual_layernorm


def _expected64(x, r, b, w, lb, eps, fm):
    """Independent float64 reference: explicit mean/variance, no F.layer_norm."""
    h = x.double() + r.double()
    if b is not None:
        h = h + (b.double()[:, None] if fm else b.double())
    axis = 0 if fm else -1
    mean = h.mean(dim=axis, keepdim=True)
    var = ((h - mean) ** 2).mean(dim=axis, keepdim=True)
    y = (h - mean) / torch.sqrt(var + eps)
    shape = (-1, 1) if fm else (-1,)
    if w is not None:
        y = y * w.double().view(shape)
    if lb is not None:
        y = y + lb.double().view(shape)
    return y


def _inputs(fm, n=48, tokens=(3, 5), affine=True, bias=True):
    shape = (n, tokens[0] * tokens[1]) if fm else (*tokens, n)
    x, r = torch.randn(shape), torch.randn(shape) * 2 + 1
    vec = lambda: torch.randn(n)  # noqa: E731
    return x, r, vec() if bias else None, vec() if affine else None, \
        vec() if affine else None


@pytest.mark.parametrize("fm", [False, True])
@pytest.mark.parametrize("affine,bias", [(True, True), (False, False), (True, False)])
def test_matches_float64(fm, affine, bias):
    torch.manual_seed(1)
    x, r, b, w, lb = _inputs(fm, affine=affine, bias=bias)
    out = op(x, r, b, w, lb, 1e-5, fm)
    assert out.shape == x.shape and out.is_contiguous()
    torch.testing.assert_close(out.double(), _expected64(x, r, b, w, lb, 1e-5, fm),
                               rtol=1e-5, atol=1e-5)


def test_layouts_agree():
    x, r, b, w, lb = _inputs(False, tokens=(2, 7))
    row = op(x, r, b, w, lb, 1e-6, False)
    col = op(x.reshape(-1, 48).t().contiguous(), r.reshape(-1, 48).t().contiguous(),
             b, w, lb, 1e-6, True)
    torch.testing.assert_close(col.t().reshape(row.shape), row, rtol=0, atol=0)


def test_bitwise_equal_to_unfused_graph():
    x, r, b, w, lb = _inputs(False)
    torch.testing.assert_close(op(x, r, b, w, lb, 1e-12, False),
                               F.layer_norm((x + b) + r, [48], w, lb, 1e-12), rtol=0, atol=0)


def test_bad_shapes_raise():
    x, r, b, w, lb = _inputs(False)
    with pytest.raises(ValueError, match="same shape"):
        op(x, r[..., :-1], b, w, lb, 1e-5, False)
    with pytest.raises(ValueError, match="bias must be"):
        op(x, r, b[:-1], w, lb, 1e-5, False)
    with pytest.raises(ValueError, match="feature-major"):
        op(x, r, b, w, lb, 1e-5, True)


@pytest.mark.parametrize("fm", [False, True])
def test_opcheck(fm):
    x, r, b, w, lb = _inputs(fm, n=16, tokens=(2, 3))
    for t in (x, r, b, w, lb):
        t.requires_grad_(True)
    torch.library.opcheck(op.default, (x, r, b, w, lb, 1e-5, fm))
    torch.library.opcheck(op.default, (x.detach(), r.detach(), None, None, None, 1e-5, fm))


@pytest.mark.parametrize("fm", [False, True])
def test_gradcheck_float64(fm):
    x, r, b, w, lb = (t.double().requires_grad_(True) for t in _inputs(fm, n=8, tokens=(2, 2)))
    assert torch.autograd.gradcheck(lambda *a: op(*a, 1e-5, fm), (x, r, b, w, lb))


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
@pytest.mark.parametrize("fm", [False, True])
def test_triton_kernel_in_interpreter(fm, monkeypatch):
    """The Triton kernels run on CPU tensors under TRITON_INTERPRET=1 (a subprocess, as
    the flag is read when triton is first imported)."""
    code = f"""
import torch
from sparsefx.runtime import norm_ops
from sparsefx.runtime.norm_triton import bias_residual_layernorm_triton as k
torch.manual_seed(3)
fm = {fm}
for n, m in ((64, 37), (100, 130), (33, 5)):
    shape = (n, m) if fm else (m, n)
    x, r = torch.randn(shape), torch.randn(shape) * 3 + 5
    b, w, lb = torch.randn(n), torch.randn(n), torch.randn(n)
    for args in ((b, w, lb), (None, None, None)):
        want = norm_ops.reference(x.double(), r.double(), *[a.double() if a is not None
                                  else None for a in args], 1e-5, fm)
        got = k(x, r, *args, 1e-5, fm)
        assert (got.double() - want).abs().max() < 1e-4, (n, m)
print("ok")
"""
    out = run_in_triton_interpreter(code, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_cuda_registration_is_noop_without_cuda():
    from sparsefx.runtime.norm_triton import register_norm_cuda
    if not torch.cuda.is_available():
        assert register_norm_cuda() is False
