"""The write of pruned-away output features (runtime/cuda/missing_features.py) on CPU
tensors under ``TRITON_INTERPRET=1``: the kernel code itself, checked without a GPU.

Into NaN-poisoned outputs of both layouts (the row-major one a view, as the tile path
passes it), with and without a bias, every activation, more missing features than one
program's block and more tokens than one block, one token, against the float64
formula ``activation(bias[f])`` (0 without a bias). Every other feature must still hold
its poison: the launch writes only the features it is given. The same kernel runs on
the GPU in tests/gpu/test_eager_fastpath.py and tests/gpu/test_tile_kernels.py.
"""
from __future__ import annotations

import importlib.util

import pytest

from sparsefx_testing import run_in_triton_interpreter

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="needs triton")

SCRIPT = r"""
import torch
from sparsefx.runtime.cuda.missing_features import fill_missing, fill_missing_launch
from sparsefx.runtime.ops import apply_activation

gen = torch.Generator().manual_seed(0)
N = 70
for dtype in (torch.float16, torch.bfloat16):
    for n_missing, M in ((37, 1), (3, 130), (16, 77)):
        missing = torch.randperm(N, generator=gen)[:n_missing].sort().values
        kept = torch.ones(N, dtype=torch.bool)
        kept[missing] = False
        for act in ("none", "relu", "gelu", "silu"):
            for has_bias in (True, False):
                bias = (torch.randn(N, generator=gen) * 2).to(dtype) if has_bias else None
                want = torch.zeros(n_missing, dtype=torch.float64) if bias is None else \
                    apply_activation(bias[missing].double(), act)
                for fm in (True, False):
                    out = torch.full((N, M) if fm else (2 * M, N), float("nan"), dtype=dtype)
                    out2 = out if fm else out[::2]          # a row-strided view
                    fill_missing(out2, fm, missing, bias, act)
                    got = (out2 if fm else out2.t()).double()
                    tol = 1e-2 * (want.abs() + 1e-3)
                    assert ((got[missing] - want[:, None]).abs() <= tol[:, None]).all(), \
                        (dtype, n_missing, M, act, has_bias, fm)
                    assert got[kept].isnan().all(), "wrote a feature it was not given"
                    if not fm:
                        assert out[1::2].isnan().all(), "wrote outside the view"
# nothing to write: no launch
out = torch.empty(4, 0)
assert fill_missing_launch(out, True, torch.tensor([1]), None, "none") is None
assert fill_missing_launch(torch.empty(4, 3), True, torch.tensor([], dtype=torch.int64),
                           None, "none") is None
fill_missing(out, True, None, None, "none")
print("ok")
"""


def test_missing_features_in_interpreter():
    out = run_in_triton_interpreter(SCRIPT)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), \
        out.stdout[-2000:] + out.stderr[-4000:]
