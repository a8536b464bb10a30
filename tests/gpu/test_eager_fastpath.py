"""GPU tests of the eager C++ path of ``sparsefx::tile_linear`` (csrc/eager_fastpath.cpp,
runtime/cuda/eager_fastpath.py).

From a layer's third eager call of one kind on, the dispatcher runs the layer in C++:
it checks the call against the registered record and launches the compiled Triton
kernels itself. Each check here is that the numbers stay right: every output equals the
general path's bit for bit on the same inputs and the float64 reference, with a
NaN-poisoned allocator; that the C++ path really ran (its hit counter); and that every
call that differs from the record (alignment, contiguity, strides, an in-place change of
the layer's structure, another layer) is passed to Python and still correct.
"""
from __future__ import annotations

from dataclasses import replace
from math import prod

import pytest
import torch

from sparsefx_testing import kernel_rel_err as rel_err
from sparsefx_testing import tile_reference

from test_eager_path import calls_equal_the_general_path, force_config, layer, \
    poisoned_allocator, replay_configs

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
triton = pytest.importorskip("triton")

TOL = 1e-2


@pytest.fixture
def fastpath(fresh_cache):
    """(dispatch module, eager_fastpath module) with the C++ path installed and its
    counters at zero. A build error fails; a machine without a compiler skips."""
    from sparsefx.runtime.cuda import eager_fastpath
    if eager_fastpath._installed_module() is None:
        reason = eager_fastpath.why_not() or "not installed"
        if "failed" in reason or "could not import" in reason:
            pytest.fail(reason)
        pytest.skip(reason)
    eager_fastpath.reset_stats()
    yield fresh_cache, eager_fastpath


def call_mode(mode, args, params=None):
    """Call the op the way ``mode`` names; ``params``: (values, bias) as parameters."""
    op = torch.ops.sparsefx.tile_linear
    if mode == "inference_mode":           # dispatcher -> C++ kernel
        with torch.inference_mode():
            return op(*args)
    if mode == "no_grad_params":           # autograd shortcut -> the module's binding
        x, _, row_idx, row_ptr, col_map, _, N, act, fm = args
        with torch.no_grad():
            return op(x, params[0], row_idx, row_ptr, col_map, params[1], N, act, fm)
    return op(*args)                       # grad mode on, nothing requires grad


@pytest.mark.parametrize("kind", ["grid", "flat", "split"])
@pytest.mark.parametrize("feature_major", [True, False], ids=["fm", "rm"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_cpp_calls_equal_the_general_path(fastpath, monkeypatch, kind, feature_major,
                                          dtype):
    dispatch, eager_fastpath = fastpath
    plan, _, _ = calls_equal_the_general_path(dispatch, monkeypatch, kind, feature_major,
                                              dtype, seed=21, calls=5)
    assert plan.missing is None      # pruned-away features: test_layers_with_pruned_features...
    hits, _, records = eager_fastpath.stats()
    assert hits == 3 and records == 1, "calls 3-5 must run in C++"


@pytest.mark.parametrize("mode", ["plain", "no_grad_params", "inference_mode"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_every_eager_mode_runs_in_cpp(fastpath, monkeypatch, mode, with_bias):
    dispatch, eager_fastpath = fastpath
    force_config(monkeypatch, dispatch, replay_configs()["grid"])
    packed, tensors, bias, gen = layer(22, 256, 192, structure="ragged")
    bias = bias if with_bias else None
    # a module's parameters: the same objects every call
    params = (torch.nn.Parameter(tensors[0]),
              None if bias is None else torch.nn.Parameter(bias))
    for _ in range(4):
        x = torch.randn(192, 77, generator=gen).to("cuda", torch.float16)
        args = (x, *tensors, bias, 256, "gelu", True)
        poisoned_allocator(256 * 77, torch.float16)
        out = call_mode(mode, args, params)
        assert not out.requires_grad
        assert rel_err(out, tile_reference(x, packed, bias, "gelu", True)) <= TOL
    assert eager_fastpath.stats()[0] == 2


def test_calls_that_differ_go_to_python(fastpath, monkeypatch):
    """Registered for an aligned, contiguous x: a 2-byte-misaligned x, non-contiguous
    values, a transposed-strides x, and row_ptr changed in place each take the Python
    path, with the right numbers."""
    dispatch, eager_fastpath = fastpath
    force_config(monkeypatch, dispatch, replay_configs()["grid"])
    packed, (values, row_idx, row_ptr, col_map), bias, gen = layer(
        23, 256, 128, structure="ragged")
    K, M = 128, 96

    def call(x, vals=values, rp=row_ptr):
        with torch.inference_mode():
            return torch.ops.sparsefx.tile_linear(x, vals, row_idx, rp, col_map, bias, 256,
                                                  "none", True)

    for _ in range(3):
        call(torch.randn(K, M, generator=gen).to("cuda", torch.float16))
    assert eager_fastpath.stats()[0] == 1
    buf = torch.randn(K * M + 8, generator=gen).to("cuda", torch.float16)
    x_off = buf[1:1 + K * M].view(K, M)
    strided = values.t().contiguous().t()
    x_t = torch.randn(M, K, generator=gen).to("cuda", torch.float16).t()
    cases = [(x_off, values), (torch.randn(K, M, generator=gen).half().cuda(), strided),
             (x_t, values)]
    for x, vals in cases:
        eager_fastpath.reset_stats()
        out = call(x, vals)
        assert eager_fastpath.stats()[:2] == (0, 1)
        assert rel_err(out, tile_reference(x, packed, bias, "none", True)) <= TOL
    # the same structure written again in place: a new version, so a new plan
    eager_fastpath.reset_stats()
    row_ptr.copy_(row_ptr.clone())
    x = torch.randn(K, M, generator=gen).to("cuda", torch.float16)
    assert rel_err(call(x), tile_reference(x, packed, bias, "none", True)) <= TOL
    assert eager_fastpath.stats()[:2] == (0, 1)


def test_errors_raised_in_python_come_through(fastpath):
    """A call the C++ path passes to Python keeps Python's exception type."""
    _, tensors, bias, gen = layer(24)
    x = torch.randn(256, 40, generator=gen).to("cuda", torch.float16)
    for ctx in (torch.inference_mode, torch.no_grad):
        with ctx(), pytest.raises(ValueError, match="unknown activation"):
            torch.ops.sparsefx.tile_linear(x, *tensors, bias, 384, "tanh", True)


def test_another_layer_of_the_same_shape_gets_its_own_record(fastpath, monkeypatch):
    """A record names its layer's tensors: a second layer of the same shapes (made after
    the first one is gone) never runs the first one's launches."""
    dispatch, eager_fastpath = fastpath
    force_config(monkeypatch, dispatch, replay_configs()["grid"])
    for seed in (25, 26):
        packed, tensors, bias, gen = layer(seed, 256, 128, structure="ragged")
        for _ in range(4):
            x = torch.randn(128, 64, generator=gen).to("cuda", torch.float16)
            with torch.inference_mode():
                out = torch.ops.sparsefx.tile_linear(x, *tensors, bias, 256, "relu", True)
            assert rel_err(out, tile_reference(x, packed, bias, "relu", True)) <= TOL
        del packed, tensors, bias
    hits, _, records = eager_fastpath.stats()
    assert hits == 4 and records == 2


def test_cpp_path_under_graph_capture(fastpath, monkeypatch):
    """A record launches on the current stream, so it works inside a CUDA graph capture
    (its output comes from the graph's pool), and the graph recomputes from new
    input contents; row-major, so the transpose launch is captured too."""
    dispatch, eager_fastpath = fastpath
    force_config(monkeypatch, dispatch, replay_configs()["flat"])
    packed, tensors, _, gen = layer(27, 192, 256, structure="ragged")
    x = torch.randn(40, 256, generator=gen).to("cuda", torch.float16)
    args = (x, *tensors, None, 192, "gelu", False)
    with torch.inference_mode():
        for _ in range(3):
            torch.ops.sparsefx.tile_linear(*args)
        assert eager_fastpath.stats()[0] == 1
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = torch.ops.sparsefx.tile_linear(*args)
        assert eager_fastpath.stats()[0] == 2
        x.copy_(torch.randn(40, 256, generator=gen).to("cuda", torch.float16))
        graph.replay()
    torch.cuda.synchronize()
    assert rel_err(out, tile_reference(x, packed, None, "gelu", False)) <= TOL


def test_defaults_left_out_by_the_caller(fastpath, monkeypatch):
    """The dispatcher passes a call without its trailing defaults (activation,
    feature_major) to the autograd shortcut as it came; the module's binding fills them
    in (row-major, no activation)."""
    dispatch, eager_fastpath = fastpath
    force_config(monkeypatch, dispatch, replay_configs()["grid"])
    packed, tensors, bias, gen = layer(28, 256, 128, structure="ragged")
    params = (torch.nn.Parameter(tensors[0]), torch.nn.Parameter(bias))
    for _ in range(4):
        x = torch.randn(2, 33, 128, generator=gen).to("cuda", torch.float16)
        with torch.no_grad():
            out = torch.ops.sparsefx.tile_linear(x, params[0], *tensors[1:], params[1], 256)
        assert out.shape == (2, 33, 256)
        assert rel_err(out, tile_reference(x, packed, bias, "none", False)) <= TOL
    assert eager_fastpath.stats()[0] == 2


def force_dense(monkeypatch, dispatch, variant="direct"):
    """Kernel choice that keeps every layer dense (by ``variant``) without timing."""
    def choose(x, values, row_idx, row_ptr, col_map, bias, out_features, activation,
               feature_major, **_):
        plan = dispatch.get_plan(row_ptr, col_map, out_features, values.shape[1])
        key, shape = dispatch._key_and_shape(x, values, plan, bias, out_features,
                                             activation, feature_major)
        dec = dispatch.Decision(key, "dense", 2.0, 1.0, replay_configs()["grid"], shape,
                                dense_variant=variant)
        dispatch._memory[key] = dec
        return dec
    monkeypatch.setattr(dispatch, "decide", choose)


@pytest.mark.parametrize("feature_major", [True, False], ids=["fm", "rm"])
@pytest.mark.parametrize("activation", ["none", "gelu"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_dense_layers_run_in_cpp(fastpath, monkeypatch, feature_major, activation,
                                 with_bias):
    """A layer kernel choice runs dense: from its third call on the C++ path runs the
    same ATen calls, bit for bit, and an in-place change of the weights takes Python
    (which unpacks them again) before the layer is registered anew."""
    dispatch, eager_fastpath = fastpath
    force_dense(monkeypatch, dispatch)
    packed, (values, row_idx, row_ptr, col_map), bias, gen = layer(
        29, 256, 192, structure="uneven")           # pruned-away features too
    bias = bias if with_bias else None
    shape = (192, 70) if feature_major else (2, 35, 192)
    for call in range(6):
        if call == 4:
            values.mul_(0.5)
            packed.values.mul_(0.5)
        x = torch.randn(shape, generator=gen).to("cuda", torch.float16)
        args = (x, values, row_idx, row_ptr, col_map, bias, 256, activation, feature_major)
        with torch.inference_mode():
            got = torch.ops.sparsefx.tile_linear(*args)
        assert torch.equal(got, dispatch.dense_forward(*args)), call
        assert rel_err(got, tile_reference(x, packed, bias, activation,
                                           feature_major)) <= TOL
    hits, misses, _ = eager_fastpath.stats()
    assert (hits, misses) == (3, 3), "calls 3, 4 and 6 in C++; 5 after the change"


def misaligned_then_changed(dispatch, built, shape, activation, feature_major, general_path):
    """Seven eager calls of the layer ``built`` (:func:`layer`'s tuple) under
    ``inference_mode``: the fourth with an x 2 bytes off a 16-byte boundary (same shape
    and strides), the weights halved in place before the sixth. Each output, from a
    NaN-poisoned allocator, must equal ``general_path(args)`` (the Python path on the
    same inputs) bit for bit, and the float64 reference."""
    packed, (values, row_idx, row_ptr, col_map), bias, gen = built
    dtype, N = values.dtype, 256
    tokens = prod(shape) // shape[0 if feature_major else -1]
    for call in range(7):
        if call == 5:
            values.mul_(0.5)
            packed.values.mul_(0.5)
        x = torch.randn(shape, generator=gen).to("cuda", dtype)
        if call == 3:
            store = torch.empty(x.numel() + 1, dtype=dtype, device="cuda")
            store[1:] = x.flatten()
            x = store[1:].view(shape)
        args = (x, values, row_idx, row_ptr, col_map, bias, N, activation, feature_major)
        poisoned_allocator(N * tokens, dtype)
        with torch.inference_mode():
            got = torch.ops.sparsefx.tile_linear(*args)
        assert torch.equal(got, general_path(args)), call
        assert rel_err(got, tile_reference(x, packed, bias, activation,
                                           feature_major)) <= TOL, call


def right_in_python(built, shape, activation):
    """Four eager feature-major calls of the layer ``built``, each against float64 (for
    layers the C++ path must leave to Python)."""
    packed, (values, row_idx, row_ptr, col_map), bias, gen = built
    for call in range(4):
        x = torch.randn(shape, generator=gen).to("cuda", values.dtype)
        args = (x, values, row_idx, row_ptr, col_map, bias, 256, activation, True)
        with torch.inference_mode():
            got = torch.ops.sparsefx.tile_linear(*args)
        assert rel_err(got, tile_reference(x, packed, bias, activation, True)) <= TOL, call


def without_bias(built, with_bias):
    """:func:`layer`'s tuple, its bias dropped unless ``with_bias``."""
    packed, tensors, bias, gen = built
    return packed, tensors, bias if with_bias else None, gen


def dense_variant_runs_in_cpp(fastpath, monkeypatch, variant, activation, with_bias,
                              dtype):
    """A feature-major layer (uneven: pruned-away output features too) pinned to the
    dense ``variant``: :func:`misaligned_then_changed` against ``dense_forward``, then
    the C++ hit and miss counts."""
    dispatch, eager_fastpath = fastpath
    force_dense(monkeypatch, dispatch, variant)
    built = without_bias(layer(31, 256, 192, dtype=dtype, structure="uneven"), with_bias)
    misaligned_then_changed(dispatch, built, (192, 72), activation, True,
                            lambda args: dispatch.dense_forward(*args, variant))
    hits, misses, _ = eager_fastpath.stats()
    assert (hits, misses) == (3, 4), "calls 3, 5 and 7 in C++; 4 misaligned, 6 changed"


@pytest.mark.parametrize("activation", ["none", "gelu"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_cutlass_dense_layers_run_in_cpp(fastpath, monkeypatch, activation, with_bias,
                                         dtype):
    """A feature-major layer kernel choice runs on the CUTLASS dense kernel: from its
    third call on C++ calls the library itself, bit for bit the Python path's numbers;
    a misaligned x and an in-place change of the weights take Python (right numbers),
    then the layer is registered anew."""
    from sparsefx.runtime.cuda import sm90_dense
    if not sm90_dense.available():
        pytest.skip(f"CUTLASS dense kernel unavailable: {sm90_dense.why_not()}")
    dense_variant_runs_in_cpp(fastpath, monkeypatch,
                              sm90_dense.VARIANT_PREFIX + sm90_dense.config_names()[0],
                              activation, with_bias, dtype)


@pytest.mark.parametrize("variant", ["triton_fm_128x64x64_w4s4g8", "triton_fm_192x128x32_w8s4g8"],
                         ids=["pow2", "3part"])
@pytest.mark.parametrize("activation", ["none", "gelu"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_triton_dense_layers_run_in_cpp(fastpath, monkeypatch, variant, activation,
                                        with_bias, dtype):
    """A feature-major layer kernel choice runs on a pointer-load configuration of the
    dense Triton kernel: from its third call on C++ launches that kernel itself, bit for
    bit the Python path's numbers; a misaligned x and an in-place change of the weights
    take Python (right numbers), then the layer is registered anew."""
    dense_variant_runs_in_cpp(fastpath, monkeypatch, variant, activation, with_bias, dtype)


def test_triton_dense_tma_layers_stay_in_python(fastpath, monkeypatch):
    """A TMA configuration of the dense Triton kernel encodes its descriptors per call,
    which the C++ path does not do: such a layer is never registered, and stays right."""
    dispatch, eager_fastpath = fastpath
    force_dense(monkeypatch, dispatch, "triton_fm_128x256x64_w8s3g8_tma")
    right_in_python(layer(23, 256, 192), (192, 80), "relu")
    assert eager_fastpath.stats()[:2] == (0, 4), "every call passed on to Python"


def sm90_config(block_m):
    from sparsefx.runtime.cuda import sm90_tile
    from sparsefx.runtime.cuda.triton_tile import TileConfig
    if not sm90_tile.available():
        pytest.skip(f"sm90 tile kernel unavailable: {sm90_tile.why_not()}")
    stages = sm90_tile.BLOCKS[(128, block_m)]
    return TileConfig(128, block_m, 64, 12, stages, group_cb=32, flat=1, impl="sm90")


@pytest.mark.parametrize("feature_major", [True, False], ids=["fm", "rm"])
@pytest.mark.parametrize("block_m", [256, 384, 128], ids=["coop", "coop384", "pingpong"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_sm90_layers_run_in_cpp(fastpath, monkeypatch, feature_major, block_m, with_bias,
                                dtype):
    """A sparse layer on the sm90 tile kernel: from its third call on C++ calls the
    library itself (after the Triton transpose of a row-major x), bit for bit the Python
    path's numbers, also after an in-place change of the weights (the kernel reads them
    per call); a misaligned x takes Python."""
    dispatch, eager_fastpath = fastpath
    cfg = sm90_config(block_m)
    force_config(monkeypatch, dispatch, cfg)
    built = without_bias(layer(37, 256, 320, G=128, dtype=dtype, structure="ragged"),
                         with_bias)
    _, (_, _, row_ptr, col_map), _, _ = built
    plan = dispatch.get_plan(row_ptr, col_map, 256, 128)
    shape = (320, 200) if feature_major else (2, 100, 320)     # M = 200: a partial block
    misaligned_then_changed(dispatch, built, shape, "gelu", feature_major,
                            lambda args: dispatch.sparse_forward(*args, plan, cfg))
    hits, misses, _ = eager_fastpath.stats()
    assert (hits, misses) == (4, 3), "calls 3, 5, 6 and 7 in C++; 4 misaligned"


@pytest.mark.parametrize("feature_major", [True, False], ids=["fm", "rm"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("impl", ["triton", "sm90", "sm90_direct"])
def test_layers_with_pruned_features_run_in_cpp(fastpath, monkeypatch, feature_major,
                                                with_bias, impl):
    """Column pruning removed output features (the "uneven" layer): the record writes
    them as the Python path does (``activation(bias)``, or 0: a launch after the tile
    kernel, or for a row-major layer on the sm90 kernel that kernel's row-segment
    epilogue unless the config asks for direct stores), bit for bit the Python path's
    numbers; a misaligned x takes Python."""
    dispatch, eager_fastpath = fastpath
    if impl.startswith("sm90"):
        cfg, K, G = sm90_config(256), 320, 128
        cfg = replace(cfg, store="direct") if impl == "sm90_direct" else cfg
    else:
        cfg, K, G = replay_configs()["grid"], 192, 64
    force_config(monkeypatch, dispatch, cfg)
    built = without_bias(layer(41, 256, K, G=G, structure="uneven"), with_bias)
    _, (_, _, row_ptr, col_map), _, _ = built
    plan = dispatch.get_plan(row_ptr, col_map, 256, G)
    assert plan.missing is not None and plan.missing.numel() > 0
    if impl.startswith("sm90"):
        default = "direct" if feature_major else "span"
        assert plan.sm90_store(feature_major) == default
        assert plan.sm90_store(feature_major, cfg.store) == (cfg.store or default)
    shape = (K, 96) if feature_major else (3, 32, K)
    misaligned_then_changed(dispatch, built, shape, "gelu", feature_major,
                            lambda args: dispatch.sparse_forward(*args, plan, cfg))
    hits, misses, _ = eager_fastpath.stats()
    assert (hits, misses) == (4, 3), "calls 3, 5, 6 and 7 in C++; 4 misaligned"
