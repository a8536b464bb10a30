"""The GELU that the GPU kernels' epilogues compute, and its CPU model for tests.

Why not ``0.5 * y * (1 + erf(y / sqrt 2))`` as written: the tile kernels apply the
activation to every output element in their epilogue, where nothing else overlaps it,
and CUDA's ``erff`` costs about 25 instructions per element. At BERT shapes (K = 768,
three K-steps per work item) that made the epilogue longer than the main loop
(bench/NOTES_tile.md round 19). The form here costs about 13 instructions and one
``ex2``, with no branch:

    a = min(|y|, 9);   e = 2 ** P(a)   (P: degree 8, fitted to log2 Phi(-a) on [0, 9])
    GELU(y) = y * (1 - e)  if y >= 0  else  y * e

``e`` is Phi(-|y|), the normal CDF of the negative side, so the small tail values are
computed directly instead of as ``1 + erf(...)``, which cancels. Against float64
(``y * exp(log_ndtr(y))``) the relative error is at most 1.3e-5 for |y| <= 9 (round to
fp16 or bf16 and it is below half an ulp almost everywhere; PyTorch's own fp32 GELU
loses up to 100% in the negative tail to that cancellation); for |y| > 9 the absolute
error is below |y| * 1.2e-19. NaN stays NaN, +inf gives +inf.

The CPU reference path keeps the exact ``F.gelu``. The kernels that use this form:
``csrc/tile_linear_sm90.cu`` (``activate<2>``) and ``runtime/cuda/triton_tile.py``
(``_activation``, also used by the missing-feature fill); ``tests/runtime/
test_gelu_polynomial.py`` checks that their constants are these.
"""
from __future__ import annotations

import torch
from torch import Tensor

# log2 Phi(-a) ~ sum_i COEFFS[i] * a**i on [0, CLAMP] (Lawson-weighted least squares,
# float32-exact values; evaluated by Horner with fused multiply-adds).
COEFFS = (-0.999996542930603, -1.1512953042984009, -0.45824098587036133,
          -0.054305121302604675, 0.008751066401600838, -0.001020095543935895,
          7.944382377900183e-05, -3.656212584246532e-06, 7.464503681831047e-08)
CLAMP = 9.0


def gelu_polynomial(y: Tensor) -> Tensor:
    """The kernels' GELU evaluated on the CPU in float32, step for step: each Horner
    step is one rounding (fused multiply-add, modelled exactly in float64), ``ex2`` is
    modelled as exact. For tests; the reference path uses ``F.gelu``."""
    y = y.to(torch.float32)
    a = y.abs().clamp(max=CLAMP).double()
    p = torch.full_like(a, COEFFS[-1]).float()
    for c in reversed(COEFFS[:-1]):
        p = (p.double() * a + c).float()   # fma: exact product, one rounding
    e = torch.exp2(p.double()).float()
    phi = torch.where(y >= 0, 1.0 - e, e)
    return y * phi
