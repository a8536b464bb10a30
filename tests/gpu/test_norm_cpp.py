"""The CUDA C++ kernel of sparsefx::bias_residual_layernorm on a real GPU.

Every check: fresh random inputs with a large mean (randn * 3 + 5), a NaN-filled output
buffer (so an unwritten element fails), a float64 reference, the relative norm error.
"""
import itertools

import pytest
import torch

import sparsefx  # noqa: F401
from sparsefx.runtime import norm_cuda, norm_ops

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
LAYOUTS = [(False, False), (True, True), (True, False), (False, True)]   # (in fm, out fm)


@pytest.fixture(scope="module", autouse=True)
def _library():
    if norm_cuda.load_library() is None:
        pytest.skip(f"CUDA C++ kernel unavailable: {norm_cuda.why_not()}")


def _inputs(n, m, dtype, fm, vecs=(True, True, True), mean=5.0):
    shape = (n, m) if fm else (m, n)
    x = (torch.randn(shape, device="cuda") * 3 + mean).to(dtype)
    r = (torch.randn(shape, device="cuda") * 3 + mean).to(dtype)
    b, w, lb = ((torch.randn(n, device="cuda") * 2 + 1).to(dtype) if on else None
                for on in vecs)
    return x, r, b, w, lb


def _reference(x, r, b, w, lb, eps, fm, out_fm):
    d = [t.double() if t is not None else None for t in (x, r, b, w, lb)]
    y = norm_ops.reference(*d, eps, fm)
    if out_fm == fm:
        return y
    return y.t().contiguous() if fm else y.reshape(-1, y.shape[-1]).t().contiguous()


def _check(x, r, b, w, lb, fm, out_fm, eps=1e-5, tol=None):
    n = x.shape[0] if fm else x.shape[-1]
    m = x.numel() // n
    ref = _reference(x, r, b, w, lb, eps, fm, out_fm)
    shape = tuple(x.shape) if out_fm == fm else ((n, m) if out_fm else (m, n))
    out = torch.full(shape, float("nan"), device="cuda", dtype=x.dtype)
    got = norm_cuda.bias_residual_layernorm_cuda(x, r, b, w, lb, eps, fm, out_fm, out=out)
    assert got.shape == ref.shape and got.dtype == x.dtype
    assert torch.isfinite(got).all(), "unwritten (NaN) or non-finite output"
    err = ((got.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    assert err < (tol or TOL[x.dtype]), (tuple(x.shape), x.dtype, fm, out_fm, err)
    return got


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("fm,out_fm", LAYOUTS)
@pytest.mark.parametrize("n,m", [(768, 4096), (1024, 333), (17, 77), (1000, 1), (96, 7),
                                 (640, 200), (2048, 64), (3000, 40), (1, 9)])
def test_matches_float64(dtype, fm, out_fm, n, m):
    _check(*_inputs(n, m, dtype, fm), fm, out_fm)


@pytest.mark.parametrize("fm,out_fm", LAYOUTS)
@pytest.mark.parametrize("vecs", list(itertools.product([True, False], repeat=3)))
def test_optional_vectors(fm, out_fm, vecs):
    _check(*_inputs(384, 96, torch.float16, fm, vecs), fm, out_fm)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("n", [2049, 4096, 8192, 8191])
def test_long_rows(dtype, n):
    """Row-major rows past one warp (one CTA per row); odd N takes the scalar path."""
    _check(*_inputs(n, 24, dtype, False), False, False)


@pytest.mark.parametrize("fm,out_fm", LAYOUTS)
def test_misaligned_pointers_take_the_scalar_path(fm, out_fm):
    n, m = 256, 64
    x, r, b, w, lb = _inputs(n, m, torch.float16, fm)
    shape = x.shape
    # contiguous views starting 2 bytes into their storage: not 16-byte aligned
    xs = torch.empty(x.numel() + 1, device="cuda", dtype=x.dtype)[1:].view(shape).copy_(x)
    rs = torch.empty(r.numel() + 1, device="cuda", dtype=r.dtype)[1:].view(shape).copy_(r)
    _check(xs, rs, b, w, lb, fm, out_fm)


@pytest.mark.parametrize("fm", [False, True])
def test_large_mean_fp32(fm):
    """Statistics stay accurate when the mean dwarfs the spread: E[h^2] - E[h]^2 in fp32
    would be off by ~1e-4 here. (Mean 100, not 1000: at 1000 the fp32 sum x + b + r
    itself rounds by ~1.5e-5 of the spread, over the 1e-5 bound, in any fp32 kernel.)"""
    for n in (768, 4000):   # register-resident and (feature-major) two-sweep paths
        _check(*_inputs(n, 48, torch.float32, fm, mean=100.0), fm, fm)


def test_3d_row_major_input():
    x, r, b, w, lb = _inputs(64, 30, torch.bfloat16, False)
    x3, r3 = x.view(5, 6, 64), r.view(5, 6, 64)
    got = _check(x3, r3, b, w, lb, False, False)
    assert got.shape == (5, 6, 64)
    _check(x3, r3, b, w, lb, False, True)            # -> [64, 30]


def test_unsupported_shapes_fall_back():
    # row-major rows too long for the kernel; row-major -> feature-major with N > 2048
    _check(*_inputs(40000, 3, torch.float16, False), False, False)
    x, r, b, w, lb = _inputs(4096, 16, torch.float16, False)
    ref = _reference(x, r, b, w, lb, 1e-5, False, True)
    got = norm_cuda.bias_residual_layernorm_cuda(x, r, b, w, lb, 1e-5, False, True)
    assert ((got.double() - ref).norm() / ref.norm()).item() < TOL[torch.float16]


@pytest.mark.parametrize("fm", [False, True])
def test_registered_op_uses_the_kernel(fm):
    """Feature-major: this kernel; row-major: the Triton row kernel when triton is there."""
    from sparsefx.runtime.norm_triton import bias_residual_layernorm_triton, triton_available
    assert norm_cuda.register_norm_cuda_cpp()
    x, r, b, w, lb = _inputs(768, 512, torch.float16, fm)
    op = torch.ops.sparsefx.bias_residual_layernorm
    got = op(x, r, b, w, lb, 1e-5, fm)
    kernel = (bias_residual_layernorm_triton if not fm and triton_available()
              else norm_cuda.bias_residual_layernorm_cuda)
    assert torch.equal(got, kernel(x, r, b, w, lb, 1e-5, fm))
    ref = _reference(x, r, b, w, lb, 1e-5, fm, fm)
    assert ((got.double() - ref).norm() / ref.norm()).item() < TOL[torch.float16]


@pytest.mark.parametrize("fm,out_fm", LAYOUTS)
def test_cuda_graph_capture(fm, out_fm):
    x, r, b, w, lb = _inputs(768, 256, torch.float16, fm)
    f = norm_cuda.bias_residual_layernorm_cuda
    f(x, r, b, w, lb, 1e-5, fm, out_fm)                    # load the kernel outside
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = f(x, r, b, w, lb, 1e-5, fm, out_fm)
    x.copy_(torch.randn_like(x) * 3 + 5)
    r.copy_(torch.randn_like(r) * 3 + 5)
    out.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    ref = _reference(x, r, b, w, lb, 1e-5, fm, out_fm)
    assert torch.isfinite(out).all()
    assert ((out.double() - ref).norm() / ref.norm()).item() < TOL[torch.float16]


def test_torch_compile():
    assert norm_cuda.register_norm_cuda_cpp()
    x, r, b, w, lb = _inputs(768, 128, torch.float16, True)

    def block(x, r):
        return torch.ops.sparsefx.bias_residual_layernorm(x * 2, r, b, w, lb, 1e-5, True) + 1

    got = torch.compile(block, fullgraph=True)(x, r)
    ref = _reference(x * 2, r, b, w, lb, 1e-5, True, True) + 1
    assert ((got.double() - ref).norm() / ref.norm()).item() < TOL[torch.float16]
