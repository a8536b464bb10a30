"""GPU tests of the Triton transpose (:mod:`sparsefx.runtime.cuda.transpose`) that feeds
row-major layers to the tile kernels: bit-exact against ``x.t()`` on fresh random
inputs, odd shapes (partial tiles on both axes, a single row), every float dtype, views
with a storage offset and a padded row stride, and the fallback for strided rows."""
from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _transpose():
    from sparsefx.runtime.cuda import available
    if not available():
        pytest.skip("triton unavailable")
    from sparsefx.runtime.cuda.transpose import transpose_2d
    return transpose_2d


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(77, 333), (4096, 768), (1, 5), (130, 64), (64, 1)])
def test_matches_torch(shape, dtype):
    transpose_2d = _transpose()
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=gen).to("cuda", dtype)
    y = transpose_2d(x)
    assert y.shape == (shape[1], shape[0]) and y.is_contiguous()
    assert torch.equal(y, x.t())


def test_views():
    transpose_2d = _transpose()
    base = torch.randn(300, 520, device="cuda", dtype=torch.float16)
    for x in (base[7:200, :333],       # storage offset, row stride 520 > 333 columns
              base[:, ::2]):           # strided rows: the torch fallback
        assert torch.equal(transpose_2d(x), x.t())
