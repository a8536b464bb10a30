"""GPU tests of the short eager path of ``sparsefx::tile_linear``: the dispatcher
shortcut past the custom-op wrappers (runtime/cuda/autograd_shortcut.py) and the direct
relaunch of compiled Triton kernels (runtime/cuda/triton_launch.py).

Both only remove host work, so every check is that the numbers stay right — against the
float64 masked dense reference on fresh random inputs, NaN-poisoned outputs where the
kernel is called directly — on each path: plain tensors with grad mode on, parameters
under ``no_grad``, ``inference_mode``, gradients, tracing, and pointers whose alignment
changes between launches.
"""
from __future__ import annotations

import pytest
import torch

from sparsefx_testing import kernel_rel_err as rel_err
from sparsefx_testing import make_tile_layer, tile_reference

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
triton = pytest.importorskip("triton")

TOL = 1e-2


def layer(seed, N=384, K=256, G=64, dtype=torch.float16):
    gen = torch.Generator().manual_seed(seed)
    packed, _ = make_tile_layer(N, K, G, "uneven", gen)
    tensors = (packed.values.to("cuda", dtype), packed.row_idx.cuda(),
               packed.row_ptr.cuda(), packed.col_map.cuda())
    bias = torch.randn(N, generator=gen).to("cuda", dtype)
    return packed, tensors, bias, gen


@pytest.mark.parametrize("feature_major", [True, False], ids=["fm", "rm"])
def test_every_eager_mode_gives_the_reference(fresh_cache, feature_major):
    packed, (values, row_idx, row_ptr, col_map), bias, gen = layer(1)
    N, K, M = packed.out_features, packed.in_features, 200
    op = torch.ops.sparsefx.tile_linear
    for mode in ("plain", "no_grad", "inference_mode", "plain again"):
        x = torch.randn((K, M) if feature_major else (M, K), generator=gen).to(
            "cuda", torch.float16)
        args = (x, values, row_idx, row_ptr, col_map, bias, N, "gelu", feature_major)
        if mode == "no_grad":
            params = [torch.nn.Parameter(values), torch.nn.Parameter(bias)]
            with torch.no_grad():
                out = op(x, params[0], row_idx, row_ptr, col_map, params[1], N, "gelu",
                         feature_major)
            assert not out.requires_grad
        elif mode == "inference_mode":
            with torch.inference_mode():
                out = op(*args)
        else:
            out = op(*args)
        ref = tile_reference(x, packed, bias, "gelu", feature_major)
        assert rel_err(out, ref) <= TOL, mode


@pytest.mark.parametrize("feature_major", [True, False], ids=["fm", "rm"])
def test_gradients_still_flow_on_cuda(fresh_cache, feature_major):
    """Parameters that require grad take the op's autograd path: the CUDA gradients
    match those of the CPU reference op in float64."""
    packed, (values, row_idx, row_ptr, col_map), bias, gen = layer(2, dtype=torch.float32)
    N, K, M = packed.out_features, packed.in_features, 96
    x = torch.randn((K, M) if feature_major else (M, K), generator=gen)
    grad_out = torch.randn((N, M) if feature_major else (M, N), generator=gen)

    def grads(device, dtype):
        xs = x.to(device, dtype).requires_grad_(True)
        v = values.detach().to(device, dtype).requires_grad_(True)
        b = bias.detach().to(device, dtype).requires_grad_(True)
        out = torch.ops.sparsefx.tile_linear(xs, v, row_idx.to(device), row_ptr.to(device),
                                             col_map.to(device), b, N, "silu",
                                             feature_major)
        assert out.requires_grad
        out.backward(grad_out.to(device, dtype))
        return [t.grad.double().cpu() for t in (xs, v, b)]

    for got, ref in zip(grads("cuda", torch.float32), grads("cpu", torch.float64)):
        assert float((got - ref).norm() / ref.norm()) <= 1e-4


def test_export_on_cuda_keeps_the_op(fresh_cache):
    """Tracing (fake tensors, export) takes the general path and records the op."""
    packed, (values, row_idx, row_ptr, col_map), bias, gen = layer(3)
    N, K = packed.out_features, packed.in_features

    class Layer(torch.nn.Module):
        def forward(self, x):
            return torch.ops.sparsefx.tile_linear(x, values, row_idx, row_ptr, col_map,
                                                  bias, N, "gelu", False)

    x = torch.randn(64, K, generator=gen).to("cuda", torch.float16)
    ep = torch.export.export(Layer(), (x,))
    assert "sparsefx.tile_linear" in str(ep.graph)
    assert rel_err(ep.module()(x), tile_reference(x, packed, bias, "gelu", False)) <= TOL


def test_relaunch_reuses_the_compiled_kernel_and_respects_alignment():
    """The second launch with the same specialisation goes through the kept
    CompiledKernel; a 16-byte misaligned input is a different specialisation (its own
    entry) and still computes the right numbers."""
    from sparsefx.runtime.cuda import triton_launch
    from sparsefx.runtime.cuda.dispatch import sparse_forward
    from sparsefx.runtime.cuda.plan import get_plan
    from sparsefx.runtime.cuda.triton_tile import TileConfig, _tile_linear_kernel
    packed, (values, row_idx, row_ptr, col_map), bias, gen = layer(4)
    N, K, M = packed.out_features, packed.in_features, 123
    plan = get_plan(row_ptr, col_map, N, values.shape[1])
    cfg = TileConfig(64, 64, 32, 4, 2)                   # a config no other test uses
    triton_launch.clear()
    wide = torch.randn(K, M + 1, generator=gen).to("cuda", torch.float16)
    for x in (wide[:, :M], wide[:, :M], wide[:, 1:]):    # aligned, again, misaligned
        out = torch.full((N, M), float("nan"), dtype=torch.float16, device="cuda")
        sparse_forward(x, values, row_idx, row_ptr, col_map, bias, N, "gelu", True, plan,
                       cfg, out=out)
        assert rel_err(out, tile_reference(x, packed, bias, "gelu", True)) <= TOL
    entries = {k: v for k, v in triton_launch._compiled.items()
               if k[0] is _tile_linear_kernel}
    assert len(entries) == 2, "aligned and misaligned x must be separate entries"
    assert all(v is not None for v in entries.values()), "direct relaunch is off"


def test_transpose_relaunch_is_exact():
    from sparsefx.runtime.cuda.transpose import transpose_2d
    gen = torch.Generator().manual_seed(6)
    for M, K in [(70, 33), (70, 33), (129, 64)]:
        x = torch.randn(M, K, generator=gen).to("cuda", torch.bfloat16)
        assert torch.equal(transpose_2d(x), x.t().contiguous())
