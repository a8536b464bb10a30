"""GPU tests of the Hopper CUDA C++ tile kernel (``csrc/tile_linear_sm90.cu``).

Each case draws fresh random inputs, runs the kernel through
:func:`sparsefx.runtime.cuda.dispatch.sparse_forward` (as the dispatcher does) into a
NaN-poisoned output, and compares with a float64 masked-dense reference built from the
same rounded packed weights. Relative error bound 2e-3 (fp16) / 1e-2 (bf16).
Skipped unless the library builds and loads (compute capability 9.0 GPU + nvcc).
"""
from __future__ import annotations

import zlib
from dataclasses import replace

import pytest
import torch

from sparsefx.patterns.tile import unpack_tensors
from sparsefx.runtime.ops import apply_activation
from sparsefx_testing import make_tile_layer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _sm90():
    from sparsefx.runtime.cuda import sm90_tile
    if not sm90_tile.available():
        pytest.skip(f"sm90 tile kernel unavailable: {sm90_tile.why_not()}")
    return sm90_tile


DTYPES = [torch.float16, torch.bfloat16]
ACTS = ["none", "relu", "gelu", "silu"]
TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}
#: token blocks of the library's kernels: cooperative 256 and 384 (BN = 128 only),
#: ping-pong 128
BLOCK_MS = [256, 384, 128]


def sm90_config(G, block_m):
    """The config of the library's kernel for ``block_m``-token items (BN = min(128, G)),
    built directly: kernel choice's candidate list (dispatch.sm90_configs) holds the
    384-token items only from M = 8192 on, and the kernel runs any M."""
    from sparsefx.runtime.cuda import sm90_tile
    from sparsefx.runtime.cuda.triton_tile import TileConfig
    bn = min(128, G)
    assert sm90_tile.supports(G, bn, block_m), (G, block_m)
    return TileConfig(bn, block_m, sm90_tile.BLOCK_K, 12, sm90_tile.BLOCKS[(bn, block_m)],
                      group_cb=32, flat=1, impl="sm90")


def test_candidates_are_library_blocks():
    """Kernel choice's sm90 candidates are block shapes the library has, with its
    stage counts, and every block shape it times is one these tests cover."""
    from sparsefx.runtime.cuda import sm90_tile
    from sparsefx.runtime.cuda.dispatch import sm90_configs
    _sm90()
    for G in (64, 128, 256):
        for M, with_384 in ((4096, False), (8192, G >= 128)):
            cands = sm90_configs(M, G)
            assert cands and all(c.impl == "sm90" for c in cands)
            assert (384 in [c.block_m for c in cands]) == with_384, (M, G)
            for c in cands:
                assert c.block_m in BLOCK_MS and c == sm90_config(G, c.block_m)


def run_case(M, K, N, G, structure, dtype, activation, with_bias, block_m, gen,
             feature_major=True, store=""):
    from sparsefx.runtime.cuda.dispatch import sparse_forward
    from sparsefx.runtime.cuda.plan import get_plan
    sm90 = _sm90()
    packed, _ = make_tile_layer(N, K, G, structure, gen)
    values = packed.values.to("cuda", dtype)
    row_idx, row_ptr, col_map = (packed.row_idx.cuda(), packed.row_ptr.cuda(),
                                 packed.col_map.cuda())
    x = torch.randn((K, M) if feature_major else (M, K), generator=gen).to("cuda", dtype)
    bias = torch.randn(N, generator=gen).to("cuda", dtype) if with_bias else None
    cfgs = [replace(sm90_config(G, block_m), store=store)]
    w = unpack_tensors(values.double(), row_idx, row_ptr, col_map, N, K)
    y = w @ x.double() if feature_major else x.double() @ w.t()
    if bias is not None:
        y = y + (bias.double()[:, None] if feature_major else bias.double())
    ref = apply_activation(y, activation)
    plan = get_plan(row_ptr, col_map, N, G)
    for cfg in cfgs:
        shape = (N, M) if feature_major else (M, N)
        out = torch.full(shape, float("nan"), dtype=dtype, device="cuda")
        sparse_forward(x, values, row_idx, row_ptr, col_map, bias, N, activation,
                       feature_major, plan, cfg, out=out)
        torch.cuda.synchronize()
        assert not torch.isnan(out).any(), "NaN in output: an element was not written"
        err = float((out.double() - ref).norm() / ref.norm().clamp_min(1e-30))
        assert err <= TOL[dtype], (err, cfg, sm90.why_not())


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("block_m", BLOCK_MS)
def test_last_step_slices(dtype, block_m):
    """Tiles whose last K-step holds 1, 2, 3 or 4 sixteen-row slices of kept rows (the
    kernel skips the all-zero slices): 16 tiles with kept counts 1..113 around every
    slice boundary, M not a multiple of the block."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"slices-{dtype}-{block_m}".encode()))
    G = 128 if block_m == 384 else 64  # 384-token blocks exist for BN = 128 only
    run_case(333, 160, 16 * G, G, "slices", dtype, "none", True, block_m, gen)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("G", [64, 128])
@pytest.mark.parametrize("block_m", BLOCK_MS)
@pytest.mark.parametrize("structure", ["uneven", "single", "empty", "dense", "ragged"])
def test_structures(dtype, G, block_m, structure):
    """Odd token counts (M = 1: one partial 16-byte piece; 77: a partial last piece and
    an unaligned row stride, so the launcher pads x; 4097: one token past the blocks)."""
    if G == 64 and block_m == 384:
        pytest.skip("384-token blocks exist for BN = 128 only (sm90_tile.BLOCKS)")
    for M in (1, 77, 4097):
        gen = torch.Generator().manual_seed(
            zlib.crc32(f"{dtype}{G}{block_m}{structure}{M}".encode()))
        N, K = (G - 28, 200) if structure == "single" else (300, 333)
        case = (M + len(structure) + G // 64) % 4
        run_case(M, K, N, G, structure, dtype, ACTS[case],
                 case % 2 == 0 or structure == "empty", block_m, gen)


@pytest.mark.parametrize("layout", ["fm", "rm"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("block_m", BLOCK_MS)
@pytest.mark.parametrize("structure,bulk_store", [("gap", True), ("dense", True),
                                                  ("tail", False), ("uneven", False)])
def test_store_paths(dtype, block_m, structure, bulk_store, layout):
    """Both epilogues, both output layouts: bulk tensor stores through shared memory
    when every tile's features are one run and the edge tile's padding lies past the
    last feature (pruned features between tiles get activation(bias) and are never
    overwritten), otherwise direct stores (feature-major) or whole row segments
    (row-major, TilePlan.sm90_store "span"). N = 296: rows of a row-major output are
    16-byte aligned (the bulk stores need that), and the last tile is an edge tile."""
    from sparsefx.runtime.cuda.plan import get_plan
    N = 296
    gen = torch.Generator().manual_seed(zlib.crc32(f"{dtype}{block_m}{structure}".encode()))
    packed, _ = make_tile_layer(N, 333, 128, structure, gen)
    plan = get_plan(packed.row_ptr.cuda(), packed.col_map.cuda(), N, 128)
    assert plan.tma_store_ok == bulk_store
    for M in (77, 1000):
        gen = torch.Generator().manual_seed(
            zlib.crc32(f"{dtype}{block_m}{structure}{M}{layout}".encode()))
        run_case(M, 333, N, 128, structure, dtype, "gelu", True, block_m, gen,
                 feature_major=layout == "fm")


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("block_m", BLOCK_MS)
@pytest.mark.parametrize("N", [700, 701])
def test_row_segments_write_pruned_features(dtype, block_m, N, monkeypatch):
    """Row-major layers whose tiles have pruned features among them: the epilogue
    writes whole row segments (TilePlan.sm90_store "span"), the pruned features
    included, so no second launch runs (the fill is made to fail here) and every
    element of the NaN-poisoned output must come from the kernel. Pruned features at
    the start, in a run wider than a 64-feature block, every other one, at the end;
    N = 701: odd rows, so no 4-byte stores; M not a multiple of the block; every
    activation, with and without a bias."""
    from sparsefx.runtime.cuda import dispatch
    from sparsefx.runtime.cuda.plan import get_plan

    def no_fill(out2, feature_major, missing, bias, activation):
        assert missing is None, "the sm90 kernel should have written the pruned features"
    monkeypatch.setattr(dispatch, "fill_missing", no_fill)
    for case, M in enumerate((77, 1000)):
        gen = torch.Generator().manual_seed(zlib.crc32(f"spans{dtype}{block_m}{N}{M}".encode()))
        packed, _ = make_tile_layer(N, 333, 128, "spans", gen)
        plan = get_plan(packed.row_ptr.cuda(), packed.col_map.cuda(), N, 128)
        assert plan.sm90_store(False) == "span" and plan.missing.numel() == 3 + 100 + 20 + 7
        for act in ACTS[case::2]:
            run_case(M, 333, N, 128, "spans", dtype, act, act != "relu", block_m,
                     torch.Generator().manual_seed(zlib.crc32(f"{act}{gen.initial_seed()}".encode())),
                     feature_major=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("block_m", BLOCK_MS)
def test_direct_stores_on_a_row_segment_layer(dtype, block_m, monkeypatch):
    """The same layers with ``TileConfig.store = "direct"`` (the variant kernel choice
    times against row segments): the kernel writes only the kept features, the
    pruned-feature launch the rest; it must run (it is counted) and every element of
    the poisoned output must be right."""
    from sparsefx.runtime.cuda import dispatch
    fills = []
    real_fill = dispatch.fill_missing

    def counted_fill(out2, feature_major, missing, bias, activation):
        fills.append(None if missing is None else missing.numel())
        real_fill(out2, feature_major, missing, bias, activation)
    monkeypatch.setattr(dispatch, "fill_missing", counted_fill)
    for M, act in ((77, "gelu"), (1000, "relu")):
        gen = torch.Generator().manual_seed(zlib.crc32(f"direct{dtype}{block_m}{M}".encode()))
        run_case(M, 333, 701, 128, "spans", dtype, act, act == "gelu", block_m, gen,
                 feature_major=False, store="direct")
    assert fills == [130, 130], "the pruned features must come from the fill launch"


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("block_m", BLOCK_MS)
def test_epilogues(activation, with_bias, dtype, block_m):
    gen = torch.Generator().manual_seed(
        zlib.crc32(f"{activation}{with_bias}{dtype}{block_m}".encode()))
    run_case(1000, 520, 384, 128, "uneven", dtype, activation, with_bias, block_m, gen)


@pytest.mark.parametrize("block_m", BLOCK_MS)
def test_long_tiles_and_wide_G(block_m):
    """Many K-steps per item (the stage ring wraps many times), G = 256 (two column
    blocks per tile) and a persistent CTA owning several items."""
    gen = torch.Generator().manual_seed(7 + block_m)
    run_case(2048, 1500, 1000, 256, "ragged", torch.float16, "gelu", True, block_m, gen)


@pytest.mark.parametrize("M", [77, 3000])
def test_row_major_layer(M):
    """Row-major layers: the dispatcher transposes x, the kernel stores row-major."""
    gen = torch.Generator().manual_seed(M)
    run_case(M, 256, 320, 64, "uneven", torch.bfloat16, "silu", True, 128, gen,
             feature_major=False)


def test_repeatable():
    """Same inputs, same bits: a race would show as run-to-run differences."""
    from sparsefx.runtime.cuda.dispatch import sparse_forward
    from sparsefx.runtime.cuda.plan import get_plan
    _sm90()
    gen = torch.Generator().manual_seed(5)
    packed, _ = make_tile_layer(1024, 1024, 128, "ragged", gen)
    values = packed.values.to("cuda", torch.float16)
    tensors = (packed.row_idx.cuda(), packed.row_ptr.cuda(), packed.col_map.cuda())
    x = torch.randn(1024, 4096, generator=gen).to("cuda", torch.float16)
    plan = get_plan(tensors[1], tensors[2], 1024, 128)
    for cfg in [sm90_config(128, block_m) for block_m in BLOCK_MS]:
        outs = [sparse_forward(x, values, *tensors, None, 1024, "none", True, plan, cfg)
                for _ in range(3)]
        assert all(torch.equal(outs[0], o) for o in outs[1:]), cfg


def test_prebuild_loads_the_libraries():
    """`python -m sparsefx.runtime.cuda.prebuild` builds (or finds) both libraries on a
    Hopper GPU with nvcc and exits 0."""
    from sparsefx.runtime.cuda import build, prebuild
    if build.nvcc_path() is None or torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("needs nvcc and a Hopper GPU")
    status = prebuild.prebuild()
    assert status["bias_residual_layernorm"].startswith("ok"), status
    assert status["tile_linear_sm90"].startswith("ok"), status
    assert prebuild.main() == 0
