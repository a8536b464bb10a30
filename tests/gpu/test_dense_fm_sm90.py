"""GPU tests of the CUTLASS dense feature-major GEMM (``csrc/dense_fm_sm90.cu`` through
:mod:`sparsefx.runtime.cuda.sm90_dense`) and of its place among kernel choice's dense
variants.

Every case draws fresh random inputs, writes into a NaN-poisoned output and compares with
the float64 product ``act(W @ x + b[:, None])``. Relative error bound 2e-3 (fp16) / 1e-2
(bf16). Skipped unless the library builds and loads (compute capability 9.0 GPU, nvcc,
CUTLASS headers).
"""
from __future__ import annotations

import zlib

import pytest
import torch

from sparsefx.runtime.ops import apply_activation
from sparsefx_testing import make_tile_layer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DTYPES = [torch.float16, torch.bfloat16]
ACTS = ["none", "relu", "gelu", "silu"]
TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}


def _sm90_dense():
    from sparsefx.runtime.cuda import sm90_dense
    if not sm90_dense.available():
        pytest.skip(f"CUTLASS dense kernel unavailable: {sm90_dense.why_not()}")
    return sm90_dense


def operands(M, K, N, dtype, gen, with_bias=True):
    w = (torch.randn(N, K, generator=gen) * K ** -0.5).to("cuda", dtype)
    x = torch.randn(K, M, generator=gen).to("cuda", dtype)
    b = torch.randn(N, generator=gen).to("cuda", dtype) if with_bias else None
    return w, x, b


def reference(w, x, b, activation):
    y = w.double() @ x.double()
    if b is not None:
        y = y + b.double()[:, None]
    return apply_activation(y, activation)


def rel_err(got, ref):
    return float((got.double() - ref).norm() / ref.norm().clamp_min(1e-30))


def run_poisoned(sm90_dense, w, x, b, activation, config):
    out = torch.full((w.shape[0], x.shape[1]), float("nan"), dtype=x.dtype, device="cuda")
    got = sm90_dense.dense_fm_linear_sm90(x, w, b, activation, config, out=out)
    torch.cuda.synchronize()
    assert got is out
    assert not torch.isnan(out).any(), "NaN in output: an element was not written"
    return out


# (M, K, N): one tile and less; edge tiles in every dimension (N not a multiple of any
# tile, M and K multiples of 8 only); many tiles with a partial last row and column
SHAPES = [(8, 64, 8), (200, 136, 96), (1032, 776, 392)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_config_every_epilogue(dtype, shape):
    """Each configuration in the library, each activation, with and without bias."""
    sm90_dense = _sm90_dense()
    gen = torch.Generator().manual_seed(zlib.crc32(f"{shape}{dtype}".encode()))
    M, K, N = shape
    for config in sm90_dense.config_names():
        for activation in ACTS:
            for with_bias in (True, False):
                w, x, b = operands(M, K, N, dtype, gen, with_bias)
                out = run_poisoned(sm90_dense, w, x, b, activation, config)
                err = rel_err(out, reference(w, x, b, activation))
                assert err <= TOL[dtype], (config, activation, with_bias, err)


def test_a_bench_shape_every_config():
    """4096x768->768 (BERT-base), where the tiles do not divide the tokens evenly."""
    sm90_dense = _sm90_dense()
    gen = torch.Generator().manual_seed(11)
    w, x, b = operands(4096, 768, 768, torch.float16, gen)
    ref = reference(w, x, b, "gelu")
    for config in sm90_dense.config_names():
        out = run_poisoned(sm90_dense, w, x, b, "gelu", config)
        assert rel_err(out, ref) <= TOL[torch.float16], config


def test_inputs_that_are_not_contiguous_or_aligned_are_copied():
    """A transposed view of x, a weight view that starts 2 bytes in: right numbers."""
    sm90_dense = _sm90_dense()
    gen = torch.Generator().manual_seed(12)
    w, x, b = operands(264, 128, 136, torch.float16, gen)
    x_view = x.t().contiguous().t()                     # same values, strides (1, K)
    w_store = torch.empty(w.numel() + 1, dtype=w.dtype, device="cuda")
    w_store[1:] = w.flatten()
    w_view = w_store[1:].view_as(w)                     # base address 2 bytes off
    config = sm90_dense.config_names()[0]
    out = sm90_dense.dense_fm_linear_sm90(x_view, w_view, b, "relu", config)
    assert rel_err(out, reference(w, x, b, "relu")) <= TOL[torch.float16]


def test_refused_calls_say_why():
    sm90_dense = _sm90_dense()
    gen = torch.Generator().manual_seed(13)
    w, x, b = operands(64, 64, 64, torch.float16, gen)
    config = sm90_dense.config_names()[0]
    with pytest.raises(ValueError, match="multiples of 8"):
        sm90_dense.dense_fm_linear_sm90(x[:, :60], w, b, "none", config)
    with pytest.raises(ValueError, match="unknown sm90 dense config"):
        sm90_dense.dense_fm_linear_sm90(x, w, b, "none", "no/such/config")
    with pytest.raises(ValueError, match="unsupported activation"):
        sm90_dense.dense_fm_linear_sm90(x, w, b, "tanh", config)
    with pytest.raises(TypeError, match="fp16 or bf16"):
        sm90_dense.dense_fm_linear_sm90(x, w.bfloat16(), b, "none", config)
    with pytest.raises(ValueError, match="contiguous"):
        sm90_dense.dense_fm_linear_sm90(x, w, b, "none", config,
                                        out=torch.empty(64, 64, device="cuda").half().t())


def test_captured_in_a_cuda_graph():
    """The launch (descriptors built on the host, workspace from the caching allocator)
    replays from a CUDA graph with new input values."""
    sm90_dense = _sm90_dense()
    gen = torch.Generator().manual_seed(14)
    w, x, b = operands(512, 256, 384, torch.float16, gen)
    config = sm90_dense.config_names()[-1]
    sm90_dense.dense_fm_linear_sm90(x, w, b, "silu", config)        # load outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = sm90_dense.dense_fm_linear_sm90(x, w, b, "silu", config)
    x.copy_(torch.randn(x.shape, generator=gen).to("cuda", x.dtype))
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert rel_err(out, reference(w, x, b, "silu")) <= TOL[torch.float16]


def test_kernel_choice_times_the_cutlass_variants(fresh_cache):
    """Feature-major layers with enough tokens list one variant per configuration;
    small M and row-major layers do not; a layer run by such a variant through
    dense_forward gives the reference numbers."""
    sm90_dense = _sm90_dense()
    dispatch = fresh_cache
    names = [sm90_dense.VARIANT_PREFIX + c for c in sm90_dense.config_names()]
    assert set(names) <= set(dispatch.dense_variants(True, 4096, 768))
    assert not set(names) & set(dispatch.dense_variants(True, 16, 4096))
    assert not set(names) & set(dispatch.dense_variants(True, 4096, 100))
    assert dispatch.dense_variants(False, 4096, 768) == ("direct",)
    gen = torch.Generator().manual_seed(15)
    packed, _ = make_tile_layer(256, 256, 64, "uneven", gen)
    values = packed.values.to("cuda", torch.float16)
    row_idx, row_ptr, col_map = (packed.row_idx.cuda(), packed.row_ptr.cuda(),
                                 packed.col_map.cuda())
    w = dispatch.dense_weight(values, row_idx, row_ptr, col_map, 256, 256, torch.float16)
    x = torch.randn(256, 512, generator=gen).to("cuda", torch.float16)
    b = torch.randn(256, generator=gen).to("cuda", torch.float16)
    ref = reference(w, x, b, "gelu")
    for variant in names:
        out = dispatch.dense_forward(x, values, row_idx, row_ptr, col_map, b, 256, "gelu",
                                     True, variant)
        assert out.shape == (256, 512) and out.is_contiguous()
        assert rel_err(out, ref) <= TOL[torch.float16], variant
