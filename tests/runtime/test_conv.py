"""im2col convolutions on the tile op: both im2col paths against F.conv in float64."""
import pytest
import torch
import torch.nn.functional as F

from sparsefx.patterns.tile import TileLayout, pack
from sparsefx.runtime import conv


def packed_conv_weight(c_out, c_in, kernel, G=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    k = c_in * int(torch.tensor(kernel).prod())
    layout = TileLayout(c_out, k, G, torch.arange(c_out),
                        torch.rand(-(-c_out // G), k, generator=gen) < 0.5)
    weight = torch.randn(c_out, k, generator=gen)
    return (weight * layout.mask()).reshape(c_out, c_in, *kernel), pack(weight, layout)


@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((2, 3, 32, 32), (8, 8), (8, 8), (0, 0)),     # patchify fast path (ViT)
    ((1, 4, 12, 16), (4, 4), (4, 4), (0, 0)),     # patchify, non-square image
    ((2, 3, 30, 32), (8, 8), (8, 8), (0, 0)),     # does not tile: F.unfold path
    ((2, 3, 9, 11), (3, 3), (1, 2), (1, 0)),      # overlapping, padded
])
def test_tile_conv_matches_float64_conv(shape, kernel, stride, padding):
    x = torch.randn(*shape)
    dense, p = packed_conv_weight(20, shape[1], kernel)
    bias = torch.randn(20)
    out = conv.tile_conv(x, p.values, p.row_idx, p.row_ptr, p.col_map, bias, 20, kernel,
                         stride, padding, (1, 1))
    ref = F.conv2d(x.double(), dense.double(), bias.double(), stride, padding)
    assert out.shape == ref.shape
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-6


def test_patchify_fast_path_equals_unfold():
    x = torch.randn(2, 3, 32, 48)
    cols, spatial = conv._im2col(x, (16, 16), (16, 16), (0, 0), (1, 1))
    assert spatial == [2, 3]
    assert torch.equal(cols, F.unfold(x, (16, 16), stride=(16, 16)).transpose(1, 2))
