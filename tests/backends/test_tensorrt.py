"""TensorRT backend. The host-side plan (per-tile GEMMs + output gather) is what the
converters emit layer by layer; it is checked against the op on CPU everywhere. The
engine test runs only where torch-tensorrt imports and a GPU is present."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsefx
from sparsefx_testing import rel_err
from sparsefx.backends import tensorrt as trt_backend
from sparsefx.export import ExportError
from sparsefx.patterns.tile import TileLayout, pack
from sparsefx.runtime.ops import csr_to_dense
from sparsefx.runtime.packed import dense_to_csr


def random_layer(n=45, k=30, G=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    kept_cols = torch.nonzero(torch.rand(n, generator=gen) < 0.8).flatten()
    tile_keep = torch.rand(-(-kept_cols.numel() // G), k, generator=gen) < 0.4
    tile_keep[1] = False                                  # an empty tile
    layout = TileLayout(n, k, G, kept_cols, tile_keep)
    return pack(torch.randn(n, k, generator=gen), layout), layout


@pytest.mark.parametrize("activation", ["none", "relu", "gelu", "silu"])
@pytest.mark.parametrize("tew", [False, True])
def test_plan_matches_op(activation, tew):
    packed, layout = random_layer(seed=len(activation) + tew)
    n, k = layout.out_features, layout.in_features
    x, bias = torch.randn(3, 5, k), torch.randn(n)
    tile = [packed.values, packed.row_idx, packed.row_ptr, packed.col_map]
    plan = trt_backend.plan_tiles(*tile, n)
    assert len(plan.blocks) < layout.num_tiles            # the empty tile is dropped
    if tew:
        ew = dense_to_csr(torch.randn(n, k), (torch.rand(n, k) < 0.05) & ~layout.mask())
        ref = torch.ops.sparsefx.tew_linear(x, *tile, *ew, bias, n, activation, False)
        out = trt_backend.run_plan(x, plan, bias, activation, csr_to_dense(*ew, n, k))
    else:
        ref = torch.ops.sparsefx.tile_linear(x, *tile, bias, n, activation, False)
        out = trt_backend.run_plan(x, plan, bias, activation)
    assert rel_err(out, ref) <= 1e-6


@pytest.mark.skipif(trt_backend.AVAILABLE, reason="torch-tensorrt is installed")
def test_clear_error_without_tensorrt():
    with pytest.raises(ExportError, match="needs torch-tensorrt"):
        trt_backend.register_converters()


@pytest.mark.skipif(not trt_backend.AVAILABLE or not torch.cuda.is_available(),
                    reason="needs torch-tensorrt and a CUDA GPU")
def test_engine_matches_eager():  # pragma: no cover - not run on our machines
    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(64, 256), nn.Linear(256, 64)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))

    x = torch.randn(16, 64)
    sm = sparsefx.compile(MLP().eval(), x, G=16, sparsity=0.75).cuda()
    engine = trt_backend.compile_with_tensorrt(sm, (x.cuda(),), min_block_size=1)
    fresh = torch.randn(16, 64, device="cuda")
    assert rel_err(engine(fresh), sm(fresh)) <= 1e-3
