"""The Triton kernel of sparsefx::bias_residual_layernorm on a real GPU."""
import pytest
import torch

import sparsefx  # noqa: F401
from sparsefx.runtime import norm_ops

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(autouse=True)
def _registered():
    from sparsefx.runtime.norm_triton import register_norm_cuda
    if not register_norm_cuda():
        pytest.skip("triton not available")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("fm", [False, True])
@pytest.mark.parametrize("n,tokens", [(768, 4096), (1024, 333), (96, 7), (3072, 128)])
def test_matches_float64(dtype, fm, n, tokens):
    torch.manual_seed(0)
    shape = (n, tokens) if fm else (tokens, n)
    x = torch.randn(shape, device="cuda", dtype=dtype)
    r = (torch.randn(shape, device="cuda") * 2 + 3).to(dtype)
    b, w, lb = (torch.randn(n, device="cuda", dtype=dtype) for _ in range(3))
    # poison the output allocator's likely reuse: a NaN-filled buffer of the same size
    torch.full(shape, float("nan"), device="cuda", dtype=dtype)
    out = torch.ops.sparsefx.bias_residual_layernorm(x, r, b, w, lb, 1e-5, fm)
    ref = norm_ops.reference(x.double(), r.double(), b.double(), w.double(), lb.double(),
                             1e-5, fm)
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-4}[dtype]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)


def test_no_optional_vectors_and_noncontiguous_input():
    x = torch.randn(512, 256, device="cuda", dtype=torch.float16)
    r = torch.randn(512, 256, device="cuda", dtype=torch.float16)
    xt = x.t()                                   # non-contiguous [256, 512] row-major
    out = torch.ops.sparsefx.bias_residual_layernorm(xt, r.t(), None, None, None, 1e-12, False)
    ref = norm_ops.reference(xt.double(), r.t().double(), None, None, None, 1e-12, False)
    torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=1e-2)


def test_cuda_graph_capture():
    x = torch.randn(64, 1024, device="cuda", dtype=torch.float16)
    r = torch.randn_like(x)
    w = torch.randn(64, device="cuda", dtype=torch.float16)
    op = torch.ops.sparsefx.bias_residual_layernorm
    op(x, r, None, w, None, 1e-5, True)          # compile the kernel outside the graph
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = op(x, r, None, w, None, 1e-5, True)
    x.copy_(torch.randn_like(x))
    g.replay()
    torch.testing.assert_close(out, op(x, r, None, w, None, 1e-5, True))
