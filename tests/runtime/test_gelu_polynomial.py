"""The kernels' GELU (runtime/gelu_polynomial.py): its accuracy against float64, its
special values, and that the CUDA and Triton kernels carry the same constants.

The float64 reference is ``y * exp(log_ndtr(y))``: the textbook ``0.5 * y * (1 +
erf(y / sqrt 2))`` cancels in the negative tail even in float64 (it returns 0 below
y = -8.3), so it cannot judge a formula that does not.
"""
from __future__ import annotations

import importlib.util
import re

import pytest
import torch
import torch.nn.functional as F

from sparsefx.runtime.cuda import build
from sparsefx.runtime.gelu_polynomial import CLAMP, COEFFS, gelu_polynomial as gelu_poly
from sparsefx_testing import run_in_triton_interpreter


def exact_gelu(y):
    y = y.double()
    return y * torch.special.log_ndtr(y).exp()


def probe_points(seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([torch.linspace(-12, 12, 200_001), torch.randn(200_000, generator=gen) * 3,
                      torch.tensor([-CLAMP, CLAMP, 1e-30, -1e-30, 1e4, -1e4])])


def test_relative_error_is_small_up_to_the_clamp_and_absolute_beyond():
    y = probe_points(0)
    got, want = gelu_poly(y).double(), exact_gelu(y)
    inside = y.abs() <= CLAMP
    rel = (got - want).abs() / want.abs().clamp_min(1e-300)
    assert rel[inside].max() <= 1.5e-5
    assert ((got - want).abs()[~inside] <= y.abs()[~inside] * 1.2e-19).all()
    # an implementation that drops the sign select, or the clamp, fails here
    assert rel[inside & (y < -1)].max() <= 1.5e-5 and got[y > 1].gt(0).all()


def test_closer_to_the_exact_value_than_float32_erf_when_rounded_to_half():
    """Rounded to fp16 (what the kernels store), the polynomial agrees with the rounded
    exact value far more often than PyTorch's own float32 GELU, which loses the
    negative tail to 1 + erf cancelling."""
    y = probe_points(1)
    want = exact_gelu(y).half()
    poly_misses = (gelu_poly(y).half() != want).sum().item()
    torch_misses = (F.gelu(y).half() != want).sum().item()
    assert poly_misses < 0.005 * y.numel() and poly_misses < torch_misses / 10


def test_special_values():
    y = torch.tensor([float("nan"), float("inf"), 0.0, -0.0])
    got = gelu_poly(y)
    assert got[0].isnan() and got[1] == float("inf") and got[2] == 0 and got[3] == 0


def _cuda_constants():
    src = (build.CSRC_DIR / "tile_linear_sm90.cu").read_text()
    body = re.search(r"float gelu\(float y\) \{(.*?)\n\}", src, re.S).group(1)
    coeffs = re.search(r"kGeluLog2Phi\[9\] = \{(.*?)\};", body, re.S).group(1)
    clamp = re.search(r"kGeluClamp = ([0-9.e+-]+)f;", body).group(1)
    return [float(c.strip().rstrip("f")) for c in coeffs.split(",")], float(clamp)


def test_the_sm90_kernel_carries_these_constants():
    coeffs, clamp = _cuda_constants()
    f32 = lambda v: torch.tensor(v, dtype=torch.float32).tolist()   # noqa: E731
    assert f32(coeffs) == f32(list(COEFFS)) and clamp == CLAMP


INTERPRETER_SCRIPT = r"""
import torch, triton, triton.language as tl
from sparsefx.runtime.cuda.triton_tile import _activation
from sparsefx.runtime.gelu_polynomial import gelu_polynomial

@triton.jit
def apply(x_ptr, y_ptr, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(y_ptr + offs, _activation(x, ACT), mask=offs < n)

x = torch.cat([torch.linspace(-12, 12, 30001), torch.randn(4000) * 3])
y = torch.full_like(x, float("nan"))
apply[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), ACT=2, BLOCK=1024)
model = gelu_polynomial(x)
rel = (y - model).abs() / model.abs().clamp_min(1e-30)
# the Triton code is the modelled formula (the interpreter's numpy exp2 and fma round
# differently from the GPU's, hence not bit for bit)
assert rel.max() <= 1e-5, rel.max()
exact = x.double() * torch.special.log_ndtr(x.double()).exp()
inside = x.abs() <= 9
assert ((y.double() - exact).abs() / exact.abs().clamp_min(1e-300))[inside].max() <= 1.5e-5
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_triton_epilogue_gelu_in_interpreter():
    result = run_in_triton_interpreter(INTERPRETER_SCRIPT)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr
