"""GPU tests of the short eager path of ``sparsefx::tile_linear``: the dispatcher
shortcut past the custom-op wrappers (runtime/cuda/autograd_shortcut.py) and the direct
relaunch of compiled Triton kernels (runtime/cuda/triton_launch.py), and the replay of
a layer's whole launch from its third call on (``dispatch._EagerRunner``).

All three only remove host work, so every check is that the numbers stay right —
against the float64 masked dense reference on fresh random inputs, NaN-poisoned outputs
where the kernel is called directly (and a NaN-poisoned allocator for the replay) — on
each path: plain tensors with grad mode on, parameters under ``no_grad``,
``inference_mode``, gradients, tracing, pointers whose alignment changes between
launches, and graph capture.
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


def layer(seed, N=384, K=256, G=64, dtype=torch.float16, structure="uneven"):
    """A packed layer of ``structure`` (sparsefx_testing.make_tile_layer) on the GPU:
    (packed, (values, row_idx, row_ptr, col_map), bias, generator)."""
    gen = torch.Generator().manual_seed(seed)
    packed, _ = make_tile_layer(N, K, G, structure, gen)
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


# --------------------------------------------------------------------------- replay
def force_config(monkeypatch, dispatch, cfg):
    """Kernel choice that keeps ``cfg`` sparse without timing (the replay must follow
    whatever config a layer got)."""
    def choose(x, values, row_idx, row_ptr, col_map, bias, out_features, activation,
               feature_major, **_):
        plan = dispatch.get_plan(row_ptr, col_map, out_features, values.shape[1])
        key, shape = dispatch._key_and_shape(x, values, plan, bias, out_features,
                                             activation, feature_major)
        dec = dispatch.Decision(key, "sparse", 1.0, 2.0, cfg, shape)
        dispatch._memory[key] = dec
        return dec
    monkeypatch.setattr(dispatch, "decide", choose)


def poisoned_allocator(numel, dtype):
    """Leave a freed NaN block in the caching allocator, so the next allocation of this
    size (the replay's output) most likely starts out as NaN."""
    torch.full((numel,), float("nan"), dtype=dtype, device="cuda")


def replay_configs():
    from sparsefx.runtime.cuda.triton_tile import TileConfig
    return {"grid": TileConfig(64, 64, 32, 4, 2),
            "flat": TileConfig(64, 64, 64, 4, 3, flat=2),
            "split": TileConfig(64, 16, 64, 4, 3, split=4)}


def calls_equal_the_general_path(dispatch, monkeypatch, kind, feature_major, dtype, seed,
                                 calls):
    """Run ``calls`` eager calls of one ragged layer under the replay config ``kind``
    (fresh inputs, NaN-poisoned allocator); each output must equal the general path's
    bit for bit and match the float64 reference. Returns (plan, the last call's first
    six arguments, the last general-path output)."""
    cfg = replay_configs()[kind]
    force_config(monkeypatch, dispatch, cfg)
    packed, (values, row_idx, row_ptr, col_map), bias, gen = layer(
        seed, 320, 200, dtype=dtype, structure="ragged")
    N, K, M = 320, 200, 24 if kind == "split" else 131
    plan = dispatch.get_plan(row_ptr, col_map, N, 64)
    shape = (K, M) if feature_major else (3, M // 3 if kind == "split" else M, K)
    for call in range(calls):
        x = torch.randn(shape, generator=gen).to("cuda", dtype)
        args = (x, values, row_idx, row_ptr, col_map, bias, N, "silu", feature_major)
        poisoned_allocator(N * x.numel() // K, dtype)
        with torch.inference_mode():
            got = torch.ops.sparsefx.tile_linear(*args)
        general = dispatch.sparse_forward(*args, plan, cfg)
        assert torch.equal(got, general), call
        assert rel_err(got, tile_reference(x, packed, bias, "silu", feature_major)) <= TOL
    return plan, args[:6], general


@pytest.mark.parametrize("kind", ["grid", "flat", "split"])
@pytest.mark.parametrize("feature_major", [True, False], ids=["fm", "rm"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_replayed_calls_equal_the_general_path(fresh_cache, monkeypatch, kind,
                                               feature_major, dtype):
    """From the third call of a kind on, the runner replays the launch: each call's
    output equals the general path's bit for bit on the same inputs and matches the
    float64 reference, and the runner is really used."""
    dispatch = fresh_cache
    plan, (x, values, row_idx, _, col_map, bias), general = calls_equal_the_general_path(
        dispatch, monkeypatch, kind, feature_major, dtype, seed=11, calls=4)
    runners = [r for r in dispatch._runners.values() if r is not None]
    assert len(runners) == 1 and runners[0].plan is plan
    replayed = runners[0](x, values, row_idx, col_map, bias, plan)   # not declined
    assert replayed is not None and torch.equal(replayed, general)


def test_replay_steps_aside_when_a_call_differs(fresh_cache, monkeypatch):
    """Same fast key, but x 2 bytes off 16-byte alignment, or values not contiguous: the
    runner declines and the general path computes the right numbers."""
    dispatch = fresh_cache
    force_config(monkeypatch, dispatch, replay_configs()["grid"])
    packed, (values, row_idx, row_ptr, col_map), bias, gen = layer(
        12, 256, 128, structure="ragged")
    K, M = 128, 96
    op = torch.ops.sparsefx.tile_linear

    def call(x, vals=values):
        return op(x, vals, row_idx, row_ptr, col_map, bias, 256, "none", True)

    for _ in range(3):
        call(torch.randn(K, M, generator=gen).to("cuda", torch.float16))
    runner, = [r for r in dispatch._runners.values() if r is not None]
    buf = torch.randn(K * M + 8, generator=gen).to("cuda", torch.float16)
    x_off = buf[1:1 + K * M].view(K, M)                   # same shape and strides
    assert x_off.data_ptr() % 16 != 0
    assert runner(x_off, values, row_idx, col_map, bias, runner.plan) is None
    assert rel_err(call(x_off), tile_reference(x_off, packed, bias, "none", True)) <= TOL
    strided = values.t().contiguous().t()                 # same shape, not contiguous
    assert runner(x_off, strided, row_idx, col_map, bias, runner.plan) is None
    x = torch.randn(K, M, generator=gen).to("cuda", torch.float16)
    assert rel_err(call(x, strided), tile_reference(x, packed, bias, "none", True)) <= TOL


@pytest.mark.parametrize("feature_major", [True, False], ids=["fm", "rm"])
def test_replay_writes_pruned_away_features(fresh_cache, monkeypatch, feature_major):
    """A layer whose col_map leaves output features out (uneven structure, one empty
    tile): the replay also writes activation(bias) into them, with and without bias."""
    dispatch = fresh_cache
    force_config(monkeypatch, dispatch, replay_configs()["grid"])
    pruned, tensors, bias, gen = layer(14, 256, 128)
    assert pruned.col_map.numel() < 256
    K, M = 128, 72
    for b in (bias, None):
        for _ in range(4):
            x = torch.randn((K, M) if feature_major else (M, K), generator=gen).to(
                "cuda", torch.float16)
            poisoned_allocator(256 * M, torch.float16)
            out = torch.ops.sparsefx.tile_linear(x, *tensors, b, 256, "relu",
                                                 feature_major)
            ref = tile_reference(x, pruned, b, "relu", feature_major)
            assert rel_err(out, ref) <= TOL
    assert len([r for r in dispatch._runners.values() if r is not None]) == 2


def test_replay_under_graph_capture_uses_the_capturing_stream(fresh_cache, monkeypatch):
    """A runner built eagerly replays inside a CUDA graph capture (it launches on the
    current stream: a launch on another stream would break the capture), and the graph
    recomputes from new input contents."""
    dispatch = fresh_cache
    force_config(monkeypatch, dispatch, replay_configs()["split"])
    packed, (values, row_idx, row_ptr, col_map), _, gen = layer(
        13, 192, 256, structure="ragged")
    x = torch.randn(256, 16, generator=gen).to("cuda", torch.float16)
    args = (x, values, row_idx, row_ptr, col_map, None, 192, "gelu", True)
    for _ in range(3):
        torch.ops.sparsefx.tile_linear(*args)
    assert [r for r in dispatch._runners.values() if r is not None]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = torch.ops.sparsefx.tile_linear(*args)
    x.copy_(torch.randn(256, 16, generator=gen).to("cuda", torch.float16))
    graph.replay()
    torch.cuda.synchronize()
    assert rel_err(out, tile_reference(x, packed, None, "gelu", True)) <= TOL
