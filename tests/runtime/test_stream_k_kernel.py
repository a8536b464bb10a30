"""The stream-K Triton tile kernel on CPU tensors under ``TRITON_INTERPRET=1``.

A subprocess, as the flag is read when triton is first imported. The interpreter runs
programs one after another in id order, so these tests prove the arithmetic (segments,
partial sums, the finisher's epilogue) and that every flag is back at 0 after a launch;
the waiting itself runs concurrently only on a GPU (``tests/gpu/test_tile_kernels.py``).
Needs triton (CI has none: skipped there).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="needs triton")

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import torch
from sparsefx_testing import kernel_rel_err, make_tile_layer, tile_reference
from sparsefx.runtime.cuda import dispatch, triton_tile
from sparsefx.runtime.cuda.plan import get_plan
from sparsefx.runtime.cuda.triton_tile import TileConfig

gen = torch.Generator().manual_seed(0)
dtype = torch.float16
G = 64
# (structure, M, programs per "SM" (the interpreter reports 4 SMs), activation)
cases = (("uneven", 77, 3, "gelu"), ("ragged", 130, 1, "relu"), ("empty", 5, 2, "none"),
         ("single", 1, 5, "silu"), ("dense", 64, 5, "none"), ("gap", 40, 2, "gelu"))
for structure, M, flat, act in cases:
    packed, _ = make_tile_layer(150, 200, G, structure, gen)
    N = packed.out_features
    plan = get_plan(packed.row_ptr, packed.col_map, N, G)
    cfg = TileConfig(32, 16, 16, 4, 2, flat=flat, stream_k=True)
    _, _, slots = plan.stream_k_for(32, 16, 16, M, flat * 4, cfg.group_cb, "cpu")
    for fm in (True, False):
        for with_bias in (True, False):
            x = torch.randn((200, M) if fm else (M, 200), generator=gen).to(dtype)
            bias = torch.randn(N, generator=gen).to(dtype) if with_bias else None
            ref = tile_reference(x, packed, bias, act, fm)
            outs = []
            for _ in range(2):      # the second launch reuses the workspace
                out = torch.full(ref.shape, float("nan"), dtype=dtype)
                dispatch.sparse_forward(x, packed.values.to(dtype), packed.row_idx,
                                        packed.row_ptr, packed.col_map, bias, N, act, fm,
                                        plan, cfg, out=out)
                assert kernel_rel_err(out, ref) < 1e-2, (structure, fm, with_bias)
                assert all(int(ws[1].abs().sum()) == 0
                           for ws in triton_tile._workspaces.values()), "flag left raised"
                outs.append(out)
            assert torch.equal(outs[0], outs[1]), "not repeatable"
    print(structure, "slots", slots)
print("ok")
"""


def test_stream_k_kernel_in_interpreter():
    """Uneven, ragged, empty, single-tile, dense and gap layers, odd M, both layouts,
    with and without bias: matches the float64 reference into a NaN-poisoned output,
    twice, bit for bit, with items split across programs (slots > 0) in most cases."""
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), \
        out.stdout[-2000:] + out.stderr[-2000:]
    slots = [int(line.split()[-1]) for line in out.stdout.splitlines()[:-1]]
    assert sum(s > 0 for s in slots) >= 4, out.stdout     # the split path really ran
