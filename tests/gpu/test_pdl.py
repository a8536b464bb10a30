"""Programmatic dependent launch (Hopper): the Triton kernels start while the kernel
before them in the stream finishes and wait (``griddepcontrol.wait``) before reading
anything it wrote (``triton_tile._after_previous_kernel``). The sm90 CUDA C++ kernel
launches without it (bench/NOTES_tile.md round 19), but it sits in such chains: after
the Triton transpose of a row-major x, and before the next layer's kernels.

A race would show where one kernel reads what the previous one writes. So each case is
a chain of three layers, each reading the previous layer's output, captured in a CUDA
graph (back-to-back launches, where the overlap happens) and replayed with a fresh input
each time (feature-major layers, and row-major ones, which the dispatcher first
transposes with another Triton kernel). Every layer's output is compared with the float64 reference applied to the
previous layer's actual output: a kernel that read its input too early would see the
previous replay's values, which no longer match.
"""
from __future__ import annotations

import pytest
import torch

from sparsefx.patterns.tile import unpack_tensors
from sparsefx.runtime.ops import apply_activation
from sparsefx_testing import make_tile_layer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

WIDTH, M = 384, 1000


def _layers(gen):
    layers = []
    for _ in range(3):
        packed, _ = make_tile_layer(WIDTH, WIDTH, 128, "uneven", gen)
        tensors = (packed.values.to("cuda", torch.float16), packed.row_idx.cuda(),
                   packed.row_ptr.cuda(), packed.col_map.cuda())
        bias = torch.randn(WIDTH, generator=gen).to("cuda", torch.float16)
        layers.append((tensors, bias))
    return layers


def _run_layer(path, x, tensors, bias):
    from sparsefx.runtime.cuda import dispatch
    from sparsefx.runtime.cuda.plan import get_plan
    from sparsefx.runtime.cuda.triton_tile import TileConfig
    values, row_idx, row_ptr, col_map = tensors
    if path.startswith("sm90"):
        # the CUDA C++ kernel; sm90_row_major: after the Triton transpose of x
        cfg = TileConfig(128, 256 if path == "sm90" else 128, 64, 12, 4 if path == "sm90"
                         else 6, group_cb=32, flat=1, impl="sm90")
        plan = get_plan(row_ptr, col_map, WIDTH, 128)
        return dispatch.sparse_forward(x, values, row_idx, row_ptr, col_map, bias, WIDTH,
                                       "gelu", path == "sm90", plan, cfg)
    if path in ("grid", "flat", "row_major", "split"):
        # row_major: x [M, K]; the dispatcher transposes it (a Triton kernel) first
        cfg = TileConfig(128, 128, 64, 8, 3, group_cb=8, flat=2 if path == "flat" else 0,
                         split=2 if path == "split" else 0)
        plan = get_plan(row_ptr, col_map, WIDTH, 128)
        return dispatch.sparse_forward(x, values, row_idx, row_ptr, col_map, bias, WIDTH,
                                       "gelu", path != "row_major", plan, cfg)
    variant = path if path == "mm_epilogue" else \
        [v for v in dispatch.dense_variants(True, M) if v.startswith("triton_fm_")][-1]
    return dispatch.dense_forward(x, values, row_idx, row_ptr, col_map, bias, WIDTH,
                                  "gelu", True, variant)


def _check_chain(x, outs, layers, feature_major=True):
    prev = x
    for out, (tensors, bias) in zip(outs, layers):
        w = unpack_tensors(tensors[0].double(), *tensors[1:], WIDTH, WIDTH)
        if feature_major:
            y = w @ prev.double() + bias.double()[:, None]
        else:
            y = prev.double() @ w.t() + bias.double()
        ref = apply_activation(y, "gelu")
        err = float((out.double() - ref).norm() / ref.norm())
        assert err < 2e-3, err
        prev = out


@pytest.mark.parametrize("path", ["grid", "flat", "row_major", "split", "dense_triton",
                                  "mm_epilogue", "sm90", "sm90_row_major"])
def test_chained_layers_under_graph_replay(fresh_cache, path):
    from sparsefx.runtime.cuda import sm90_tile
    from sparsefx.runtime.cuda.triton_tile import pdl_enabled
    if not pdl_enabled(torch.device("cuda")):
        pytest.skip("programmatic dependent launch needs compute capability 9.0+")
    if path.startswith("sm90") and not sm90_tile.available():
        pytest.skip(f"sm90 tile kernel unavailable: {sm90_tile.why_not()}")
    gen = torch.Generator().manual_seed(11)
    layers = _layers(gen)
    row_major = path in ("row_major", "sm90_row_major")
    shape = (M, WIDTH) if row_major else (WIDTH, M)
    fm = not row_major
    x = torch.randn(shape, generator=gen).to("cuda", torch.float16)

    def chain():
        outs, h = [], x
        for tensors, bias in layers:
            h = _run_layer(path, h, tensors, bias)
            outs.append(h)
        return outs

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        _check_chain(x, chain(), layers, fm)       # eager, and compiles the kernels
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = chain()
    for _ in range(3):
        x.copy_(torch.randn(shape, generator=gen).to("cuda", torch.float16))
        graph.replay()
        torch.cuda.synchronize()
        _check_chain(x, outs, layers, fm)


def test_pdl_switch(monkeypatch):
    """``SPARSEFX_PDL=0`` turns it off; CPU tensors never use it."""
    from sparsefx.runtime.cuda import triton_tile
    monkeypatch.setattr(triton_tile, "_pdl", {})
    monkeypatch.setenv("SPARSEFX_PDL", "0")
    assert not triton_tile.pdl_enabled(torch.device("cuda"))
    monkeypatch.setattr(triton_tile, "_pdl", {})
    monkeypatch.delenv("SPARSEFX_PDL")
    assert triton_tile.pdl_enabled(torch.device("cuda")) == \
        (torch.cuda.get_device_capability()[0] >= 9)
    assert not triton_tile.pdl_enabled(torch.device("cpu"))
