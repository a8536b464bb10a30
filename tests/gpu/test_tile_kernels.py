"""GPU tests of the Triton ``sparsefx::tile_linear`` kernels and the kernel choice.

Every check draws fresh random inputs, compares with a float64 masked dense reference
(``unpack`` gives exactly ``W * mask``), and runs into a NaN-poisoned output so that an
element the kernel forgot to write fails the test. Relative error bound 1e-2 (fp16/bf16
operands, fp32 accumulation).
"""
from __future__ import annotations

import itertools
import zlib

import pytest
import torch

from sparsefx_testing import kernel_rel_err as rel_err
from sparsefx_testing import make_tile_layer
from sparsefx_testing import tile_reference as reference

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except ImportError:
    HAVE_TRITON = False
if not HAVE_TRITON:
    pytestmark.append(pytest.mark.skip(reason="needs triton"))

DTYPES = [torch.float16, torch.bfloat16]
ACTS = ["none", "relu", "gelu", "silu"]
TOL = 1e-2


# --------------------------------------------------------------------------- helpers
def to_cuda(packed, dtype):
    return (packed.values.to("cuda", dtype), packed.row_idx.cuda(), packed.row_ptr.cuda(),
            packed.col_map.cuda())


def run_kernel(x, packed, dtype, bias, activation, feature_major, cfg):
    from sparsefx.runtime.cuda.dispatch import sparse_forward
    from sparsefx.runtime.cuda.plan import get_plan
    values, row_idx, row_ptr, col_map = to_cuda(packed, dtype)
    N = packed.out_features
    shape = (N, x.shape[1]) if feature_major else (*x.shape[:-1], N)
    out = torch.full(shape, float("nan"), dtype=dtype, device="cuda")
    plan = get_plan(row_ptr, col_map, N, values.shape[1])
    return sparse_forward(x, values, row_idx, row_ptr, col_map, bias, N, activation,
                          feature_major, plan, cfg, out=out)


def inputs(M, K, N, dtype, feature_major, with_bias, gen, batch=None):
    x = torch.randn((K, M) if feature_major else ((batch, M, K) if batch else (M, K)),
                    generator=gen).to("cuda", dtype)
    bias = torch.randn(N, generator=gen).to("cuda", dtype) if with_bias else None
    return x, bias


# --------------------------------------------------------------------------- kernel tests
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("feature_major", [True, False], ids=["fm", "rm"])
@pytest.mark.parametrize("structure", ["uneven", "single", "empty", "dense"])
@pytest.mark.parametrize("M", [1, 7, 1000])
def test_structures(dtype, feature_major, structure, M):
    from sparsefx.runtime.cuda.dispatch import default_config
    gen = torch.Generator().manual_seed(
        zlib.crc32(f"{dtype}{feature_major}{structure}{M}".encode()))
    N, K, G = (100, 72, 128) if structure == "single" else (300, 200, 64)
    packed, _ = make_tile_layer(N, K, G, structure, gen)
    case = (M + len(structure)) % 4
    activation, with_bias = ACTS[case], case % 2 == 0 or structure == "empty"
    x, bias = inputs(M, K, N, dtype, feature_major, with_bias, gen)
    out = run_kernel(x, packed, dtype, bias, activation, feature_major,
                     default_config(M, G, feature_major))
    ref = reference(x, packed, bias, activation, feature_major)
    assert rel_err(out, ref) <= TOL


@pytest.mark.parametrize("activation,with_bias",
                         list(itertools.product(ACTS, [True, False])))
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
def test_epilogues(activation, with_bias, dtype):
    gen = torch.Generator().manual_seed(7)
    from sparsefx.runtime.cuda.dispatch import default_config
    packed, _ = make_tile_layer(256, 192, 64, "uneven", gen)
    for feature_major in (True, False):
        x, bias = inputs(333, 192, 256, dtype, feature_major, with_bias, gen)
        out = run_kernel(x, packed, dtype, bias, activation, feature_major,
                         default_config(333, 64, feature_major))
        assert rel_err(out, reference(x, packed, bias, activation, feature_major)) <= TOL


@pytest.mark.parametrize("M", [16, 500, 2048])
@pytest.mark.parametrize("feature_major", [True, False], ids=["fm", "rm"])
def test_every_candidate_config(M, feature_major):
    """Each config the dispatcher may pick computes the same function."""
    from sparsefx.runtime.cuda.dispatch import candidate_configs
    gen = torch.Generator().manual_seed(M)
    G = 128
    packed, _ = make_tile_layer(520, 300, G, "uneven", gen)
    x, bias = inputs(M, 300, 520, torch.float16, feature_major, True, gen)
    ref = reference(x, packed, bias, "gelu", feature_major)
    for cfg in candidate_configs(M, G, feature_major):
        out = run_kernel(x, packed, torch.float16, bias, "gelu", feature_major, cfg)
        assert rel_err(out, ref) <= TOL, cfg


SPLIT_CONFIGS = [(64, 16, 64, 4, 4, 4), (32, 64, 32, 4, 3, 2), (128, 128, 64, 8, 3, 1),
                 (128, 128, 64, 8, 3, 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("feature_major", [True, False], ids=["fm", "rm"])
@pytest.mark.parametrize("structure", ["uneven", "single", "empty", "ragged", "gap"])
@pytest.mark.parametrize("M", [7, 1000])
def test_split_k(dtype, feature_major, structure, M):
    """Split-K (TileConfig.split): cut blocks whose parts' fp32 sums the last part
    adds. Three launches in a row on fresh inputs (the kernel must leave every
    counter at 0 for the next), into NaN-poisoned outputs; the counters are 0 after."""
    from sparsefx.runtime.cuda.plan import get_plan
    from sparsefx.runtime.cuda.triton_tile import TileConfig
    gen = torch.Generator().manual_seed(
        zlib.crc32(f"split{dtype}{feature_major}{structure}{M}".encode()))
    G = 128
    packed, _ = make_tile_layer(300, 520, G, structure, gen)
    values, row_idx, row_ptr, col_map = to_cuda(packed, dtype)
    plan = get_plan(row_ptr, col_map, packed.out_features, G)
    cut_some = False
    for i, (bn, bm, bk, warps, stages, split) in enumerate(SPLIT_CONFIGS):
        cfg = TileConfig(bn, bm, bk, warps, stages, split=split)
        cut = plan.split_blocks_for(bn, bk, split, "cuda")
        cut_some |= cut.groups > 0
        activation = ACTS[i % 4]
        for _ in range(3):
            x, bias = inputs(M, 520, 300, dtype, feature_major, i % 2 == 0, gen)
            out = run_kernel(x, packed, dtype, bias, activation, feature_major, cfg)
            ref = reference(x, packed, bias, activation, feature_major)
            assert rel_err(out, ref) <= TOL, cfg
        if cut.groups:
            _, counters = plan.split_workspace(cut, bn, bm, M, "cuda")
            assert int(counters.abs().sum()) == 0, cfg
    assert cut_some == (structure != "empty")


def test_row_major_batched_input():
    """Row-major x with leading batch dims keeps them in the output."""
    from sparsefx.runtime.cuda.dispatch import default_config
    gen = torch.Generator().manual_seed(3)
    packed, _ = make_tile_layer(192, 128, 64, "uneven", gen)
    x, bias = inputs(37, 128, 192, torch.bfloat16, False, True, gen, batch=3)
    out = run_kernel(x, packed, torch.bfloat16, bias, "silu", False,
                     default_config(111, 64, False))
    assert out.shape == (3, 37, 192)
    assert rel_err(out, reference(x, packed, bias, "silu", False)) <= TOL


# --------------------------------------------------------------------------- op + dispatch
@pytest.mark.parametrize("feature_major", [True, False], ids=["fm", "rm"])
def test_op_dispatch_and_cache(fresh_cache, feature_major):
    """Through torch.ops: the first call decides (and persists), results are right
    whichever path won, and a reload from disk gives the same decision."""
    dispatch = fresh_cache
    gen = torch.Generator().manual_seed(11)
    packed, _ = make_tile_layer(768, 768, 128, "uneven", gen)
    values, row_idx, row_ptr, col_map = to_cuda(packed, torch.float16)
    x, bias = inputs(512, 768, 768, torch.float16, feature_major, True, gen)
    out = torch.ops.sparsefx.tile_linear(x, values, row_idx, row_ptr, col_map, bias, 768,
                                         "relu", feature_major)
    assert rel_err(out, reference(x, packed, bias, "relu", feature_major)) <= TOL
    (dec,) = dispatch.decisions()
    assert dec.choice in ("sparse", "dense") and dec.dense_ms > 0 and dec.sparse_ms > 0
    assert dec.choice == ("sparse" if dec.sparse_ms < dec.dense_ms else "dense")
    assert dispatch.cache_path().exists()
    dispatch.clear_decisions()                       # memory only; disk stays
    again = dispatch.decide(x, values, row_idx, row_ptr, col_map, bias, 768, "relu",
                            feature_major)
    assert again.key == dec.key and again.choice == dec.choice


@pytest.mark.parametrize("variant", ["direct", "via_row_major", "mm_epilogue", "triton"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("M", [1, 77, 256])
def test_dense_fallback_path(fresh_cache, variant, with_bias, M):
    """A layer forced to dense gives the same numbers through the cached weight, by
    each feature-major dense variant (contiguous [N, M] out); "triton" is the first
    dense Triton config for this M."""
    dispatch = fresh_cache
    if variant == "triton":
        variant = [v for v in dispatch.dense_variants(True, M) if v.startswith("triton")][0]
    gen = torch.Generator().manual_seed(5)
    packed, _ = make_tile_layer(256, 256, 64, "uneven", gen)
    values, row_idx, row_ptr, col_map = to_cuda(packed, torch.bfloat16)
    x, bias = inputs(M, 256, 256, torch.bfloat16, True, with_bias, gen)
    out = dispatch.dense_forward(x, values, row_idx, row_ptr, col_map, bias, 256, "gelu",
                                 True, variant)
    assert out.shape == (256, M) and out.is_contiguous()
    assert rel_err(out, reference(x, packed, bias, "gelu", True)) <= TOL


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("M", [1, 16, 77, 1000, 2048, 4097])
def test_dense_triton_kernel_every_config(dtype, M):
    """Every dense Triton config kernel choice times for this M, at odd N and a K that
    is not a multiple of any BLOCK_K, into NaN-poisoned outputs, with each
    activation, with and without bias. M = 2048 runs the TMA configs through TMA
    (16-byte rows), M = 4097 through their pointer fallback."""
    from sparsefx.runtime.cuda.triton_dense import dense_configs, dense_fm_linear
    from sparsefx.runtime.ops import apply_activation
    gen = torch.Generator().manual_seed(zlib.crc32(f"{dtype}{M}".encode()))
    N, K = 333, 200
    w = (torch.randn(N, K, generator=gen) * K ** -0.5).to("cuda", dtype)
    x = torch.randn(K, M, generator=gen).to("cuda", dtype)
    for cfg, (act, with_bias) in zip(dense_configs(M),
                                     itertools.cycle(itertools.product(ACTS, (True, False)))):
        bias = torch.randn(N, generator=gen).to("cuda", dtype) if with_bias else None
        ref = w.double() @ x.double()
        if bias is not None:
            ref = ref + bias.double()[:, None]
        ref = apply_activation(ref, act)
        out = torch.full((N, M), float("nan"), dtype=dtype, device="cuda")
        dense_fm_linear(x, w, bias, act, cfg, out=out)
        assert rel_err(out, ref) <= TOL, (cfg, act, with_bias)


def test_dense_triton_kernel_at_a_bench_shape():
    """The large-block configs at a BERT shape (K a multiple of BLOCK_K: the unmasked
    main loop; TMA loads), fp16, gelu + bias; each config twice on fresh inputs, so the
    second call goes through the cached relaunch (triton_launch), descriptors
    included."""
    from sparsefx.runtime.cuda.triton_dense import dense_configs, dense_fm_linear
    from sparsefx.runtime.ops import apply_activation
    gen = torch.Generator().manual_seed(11)
    N, K, M = 768, 3072, 4096
    w = (torch.randn(N, K, generator=gen) * K ** -0.5).to("cuda", torch.float16)
    bias = torch.randn(N, generator=gen).to("cuda", torch.float16)
    assert any(cfg.loads == "tma" for cfg in dense_configs(M))
    for cfg in dense_configs(M):
        for _ in range(2):
            x = torch.randn(K, M, generator=gen).to("cuda", torch.float16)
            ref = apply_activation(w.double() @ x.double() + bias.double()[:, None], "gelu")
            out = torch.full((N, M), float("nan"), dtype=torch.float16, device="cuda")
            dense_fm_linear(x, w, bias, "gelu", cfg, out=out)
            assert rel_err(out, ref) <= TOL, cfg


def test_decision_runs_its_dense_variant(fresh_cache, monkeypatch):
    """The op runs the dense variant its decision names."""
    dispatch = fresh_cache
    gen = torch.Generator().manual_seed(8)
    packed, _ = make_tile_layer(192, 128, 64, "uneven", gen)
    values, row_idx, row_ptr, col_map = to_cuda(packed, torch.float16)
    x, bias = inputs(99, 128, 192, torch.float16, True, True, gen)
    args = (x, values, row_idx, row_ptr, col_map, bias, 192, "relu", True)
    dec = dispatch.decide(*args)
    dec.choice, dec.dense_variant = "dense", "via_row_major"
    seen = []
    real = dispatch.dense_forward
    monkeypatch.setattr(dispatch, "dense_forward",
                        lambda *a: seen.append(a[-1]) or real(*a))
    out = torch.ops.sparsefx.tile_linear(*args)
    assert seen == ["via_row_major"]
    assert rel_err(out, reference(x, packed, bias, "relu", True)) <= TOL


def test_fp32_goes_dense(fresh_cache):
    """fp32 is not a kernel dtype: the op still answers, through cuBLAS."""
    gen = torch.Generator().manual_seed(9)
    packed, _ = make_tile_layer(128, 96, 64, "uneven", gen)
    values, row_idx, row_ptr, col_map = to_cuda(packed, torch.float32)
    x, bias = inputs(10, 96, 128, torch.float32, False, True, gen)
    out = torch.ops.sparsefx.tile_linear(x, values, row_idx, row_ptr, col_map, bias, 128,
                                         "none", False)
    assert rel_err(out, reference(x, packed, bias, "none", False)) <= 1e-3


# --------------------------------------------------------------------------- transposed view
@pytest.mark.parametrize("M", [7, 1000])
def test_row_major_op_on_a_transposed_view(M):
    """``propagate_layout`` lets a row-major op read a feature-major value through
    ``x_fm.t()`` ([M, K], strides (1, M)); every candidate computes the same function on
    that view as on a contiguous copy, and the Triton path gathers it without a copy."""
    from sparsefx.runtime.cuda.dispatch import candidate_configs
    gen = torch.Generator().manual_seed(100 + M)
    packed, _ = make_tile_layer(300, 200, 64, "uneven", gen)
    x_fm, bias = inputs(M, 200, 300, torch.float16, True, True, gen)
    view = x_fm.t()
    assert view.stride() == (1, M)
    ref = reference(view.contiguous(), packed, bias, "gelu", False)
    for cfg in candidate_configs(M, 64, False):
        out = run_kernel(view, packed, torch.float16, bias, "gelu", False, cfg)
        assert rel_err(out, ref) <= TOL, cfg


def test_transposed_view_gets_its_own_decision(fresh_cache):
    """The decision key tells a transposed-view input from a contiguous one, and the
    op result is right for both."""
    dispatch = fresh_cache
    gen = torch.Generator().manual_seed(12)
    packed, _ = make_tile_layer(256, 256, 128, "uneven", gen)
    values, row_idx, row_ptr, col_map = to_cuda(packed, torch.float16)
    x_fm, bias = inputs(512, 256, 256, torch.float16, True, True, gen)
    for x in (x_fm.t(), x_fm.t().contiguous()):
        out = torch.ops.sparsefx.tile_linear(x, values, row_idx, row_ptr, col_map, bias,
                                             256, "none", False)
        assert rel_err(out, reference(x, packed, bias, "none", False)) <= TOL
    keys = [d.key for d in dispatch.decisions()]
    assert len(keys) == 2 and sum(k.endswith("|xT") for k in keys) == 1
