"""The Triton tile kernels (grid and flattened persistent) on CPU tensors under
``TRITON_INTERPRET=1``: the kernel code itself, checked without a GPU.

A subprocess, as the flag is read when triton is first imported. Uneven, ragged, empty,
single-tile, dense and gap layers; odd M; both layouts; K-steps that end inside a tile;
flattened programs that hold several items, or none; split-K (blocks cut into parts,
the same workspace reused by the next case). Into NaN-poisoned outputs against
the float64 reference. Needs triton (CI has none: skipped there); the same kernels run
on the GPU in ``tests/gpu/test_tile_kernels.py``.
"""
from __future__ import annotations

import importlib.util

import pytest

from sparsefx_testing import run_in_triton_interpreter

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="needs triton")

SCRIPT = r"""
import torch
from sparsefx_testing import kernel_rel_err, make_tile_layer, tile_reference
from sparsefx.runtime.cuda import dispatch
from sparsefx.runtime.cuda.plan import get_plan
from sparsefx.runtime.cuda.triton_tile import TileConfig

gen = torch.Generator().manual_seed(0)
dtype = torch.float16
G = 64
# the interpreter reports 4 SMs: flat=5 makes 20 programs, some without an item
configs = (TileConfig(32, 16, 16, 4, 2), TileConfig(64, 32, 32, 4, 2, group_cb=2),
           TileConfig(32, 16, 16, 4, 2, flat=1), TileConfig(32, 16, 16, 4, 2, flat=5),
           TileConfig(64, 32, 32, 4, 2, flat=2),
           # split-K: the last part of a cut block adds the parts' sums
           TileConfig(32, 16, 16, 4, 2, split=2), TileConfig(64, 32, 32, 4, 2, split=1),
           TileConfig(32, 16, 16, 4, 2, group_cb=2, split=4))
for structure, M, act in (("uneven", 77, "gelu"), ("ragged", 130, "relu"), ("empty", 5, "none"),
                          ("single", 1, "silu"), ("dense", 64, "none"), ("gap", 40, "gelu")):
    packed, _ = make_tile_layer(150, 200, G, structure, gen)
    N = packed.out_features
    plan = get_plan(packed.row_ptr, packed.col_map, N, G)
    for cfg in configs:
        for fm in (True, False):
            x = torch.randn((200, M) if fm else (M, 200), generator=gen).to(dtype)
            bias = torch.randn(N, generator=gen).to(dtype) if M % 2 else None
            ref = tile_reference(x, packed, bias, act, fm)
            out = torch.full(ref.shape, float("nan"), dtype=dtype)
            dispatch.sparse_forward(x, packed.values.to(dtype), packed.row_idx,
                                    packed.row_ptr, packed.col_map, bias, N, act, fm, plan,
                                    cfg, out=out)
            assert kernel_rel_err(out, ref) < 1e-2, (structure, cfg, fm)
print("ok")
"""


def test_tile_kernels_in_interpreter():
    out = run_in_triton_interpreter(SCRIPT)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), \
        out.stdout[-2000:] + out.stderr[-2000:]
