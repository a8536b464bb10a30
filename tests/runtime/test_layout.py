"""Layout conversion helpers against plain transposes."""
import pytest
import torch

from sparsefx.runtime import layout


def test_heads_to_feature_major_is_the_two_step_route_in_one_copy():
    a = torch.randn(2, 3, 5, 4)                      # [B, H, S, d]
    two_step = layout.to_feature_major(a.transpose(1, 2).reshape(2, 5, 12))
    out = layout.heads_to_feature_major(a)
    assert torch.equal(out, two_step) and out.is_contiguous() and out.shape == (12, 10)


def test_tokens_to_shape_restores_token_dims():
    y = torch.randn(10, 7)
    like = torch.randn(2, 5, 3)
    assert layout.tokens_to_shape(y, like).shape == (2, 5, 7)
    assert layout.tokens_to_shape(y, None, [5, 2, 9]).shape == (5, 2, 7)
    assert torch.equal(layout.tokens_to_shape(y, like).reshape(10, 7), y)


def test_round_trip():
    x = torch.randn(2, 5, 6)
    assert torch.equal(layout.from_feature_major(layout.to_feature_major(x), like=x), x)


def _three_conversions(x):
    """Each conversion on its own input shape: (to, from, heads) of ``x [B, S, H, d]``."""
    B, S, H, d = x.shape
    rows = x.reshape(B, S, H * d)
    return (layout.to_feature_major(rows),
            layout.from_feature_major(rows.reshape(B * S, H * d).t().contiguous(), like=rows),
            layout.heads_to_feature_major(x.transpose(1, 2)))


def test_tracing_takes_the_aten_route(monkeypatch):
    """A fake CUDA tensor (as torch.export traces with) must not take the Triton
    transpose, even where the CUDA kernels are registered: the tracer would not record
    it. (The conversions themselves cannot run on a fake CUDA tensor in a CPU build.)"""
    from torch._subclasses.fake_tensor import FakeTensorMode

    import sparsefx.runtime.cuda as cuda
    monkeypatch.setattr(cuda, "register_cuda_kernels", lambda: True)
    with FakeTensorMode():
        x = torch.empty(10, 12, device="cuda")
        assert x.is_cuda and not layout._tiled_transpose_applies(x)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(3, 37, 5, 24), (1, 1, 1, 8), (2, 130, 12, 64)])
def test_gpu_conversions_match_the_aten_copy(dtype, shape):
    """The tiled transpose route (odd sizes, one token, BERT heads) against the same
    conversions on the CPU, bit for bit."""
    x = torch.randn(*shape, dtype=dtype)
    assert layout._tiled_transpose_applies(x.cuda().reshape(-1, shape[-1]))
    for got, want in zip(_three_conversions(x.cuda()), _three_conversions(x)):
        assert got.is_contiguous() and got.shape == want.shape
        assert torch.equal(got.cpu(), want)


@pytest.mark.cuda
def test_gpu_heads_of_sdpa_output_and_of_other_strides():
    """The real attention output of q/k/v strided as HF makes them (views of a
    row-major [B, S, H, d]; whichever SDPA kernel runs) and a [B, H, S, d] that is
    contiguous as it is (the aten route) give the permuted copy."""
    q, k, v = (torch.randn(2, 33, 4, 64, device="cuda", dtype=torch.float16).transpose(1, 2)
               for _ in range(3))
    a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for heads in (a, a.contiguous()):
        want = heads.permute(1, 3, 0, 2).reshape(4 * 64, 2 * 33).contiguous()
        assert torch.equal(layout.heads_to_feature_major(heads), want)


@pytest.mark.cuda
def test_gpu_autograd_and_export_take_the_aten_route():
    x = torch.randn(3, 40, 24, device="cuda", requires_grad=True)
    assert not layout._tiled_transpose_applies(x.reshape(-1, 24))
    layout.to_feature_major(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))

    class Heads(torch.nn.Module):
        def forward(self, a):
            return layout.heads_to_feature_major(a)

    a = torch.randn(2, 5, 7, 4, device="cuda").transpose(1, 2)
    ep = torch.export.export(Heads(), (a,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert all(t.startswith("aten.") for t in targets), targets
    assert torch.equal(ep.module()(a), Heads()(a))
