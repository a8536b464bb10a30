"""sparsefx ops: opcheck, float64 masked-dense reference, gradients, argument errors."""
import pytest
import torch
import torch.nn.functional as F

from sparsefx.patterns.tile import TileLayout, pack, unpack_tensors
from sparsefx.runtime.ops import apply_activation
from sparsefx.runtime.packed import dense_to_csr

tile_linear = torch.ops.sparsefx.tile_linear.default
tew_linear = torch.ops.sparsefx.tew_linear.default

ACTS = ["none", "relu", "gelu", "silu"]
REFERENCE_ACTS = {"none": lambda y: y, "relu": torch.relu, "gelu": F.gelu, "silu": F.silu}


def make_layer(n=45, k=30, G=8, empty_tile=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    kept_cols = torch.nonzero(torch.rand(n, generator=gen) < 0.8).flatten()
    tiles = -(-kept_cols.numel() // G)
    tile_keep = torch.rand(tiles, k, generator=gen) < 0.4
    if empty_tile:
        tile_keep[0] = False
    layout = TileLayout(n, k, G, kept_cols, tile_keep)
    weight = torch.randn(n, k, generator=gen)
    return layout, weight, pack(weight, layout)


def reference(x, dense_weight, bias, act, feature_major):
    """Masked dense matmul in float64, computed without any sparsefx code."""
    x64, w64 = x.double(), dense_weight.double()
    y = (w64 @ x64) if feature_major else x64 @ w64.t()
    if bias is not None:
        y = y + (bias.double()[:, None] if feature_major else bias.double())
    return REFERENCE_ACTS[act](y)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("feature_major", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
def test_tile_linear_matches_float64_reference(act, feature_major, with_bias):
    layout, weight, packed = make_layer()
    bias = torch.randn(layout.out_features) if with_bias else None
    x = torch.randn(layout.in_features, 13) if feature_major else torch.randn(2, 7, layout.in_features)
    out = tile_linear(x, packed.values, packed.row_idx, packed.row_ptr, packed.col_map, bias,
                      layout.out_features, act, feature_major)
    ref = reference(x, weight * layout.mask(), bias, act, feature_major)
    assert out.shape == ref.shape
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-6
    # pruned output features hold only bias (then activation)
    pruned = torch.ones(layout.out_features, dtype=torch.bool)
    pruned[layout.kept_cols] = False
    expect = reference(torch.zeros_like(x), weight * 0, bias, act, feature_major)
    got = out[pruned] if feature_major else out[..., pruned]
    want = expect[pruned] if feature_major else expect[..., pruned]
    assert torch.allclose(got.double(), want, atol=1e-6)


@pytest.mark.parametrize("feature_major", [False, True])
@pytest.mark.parametrize("act", ["none", "gelu"])
def test_opcheck_tile_linear(feature_major, act):
    layout, weight, packed = make_layer(n=20, k=12, G=4)
    x = torch.randn(12, 5) if feature_major else torch.randn(5, 12)
    bias = torch.randn(20)
    values = packed.values.clone().requires_grad_(True)
    torch.library.opcheck(tile_linear, (x.requires_grad_(True), values, packed.row_idx,
                                        packed.row_ptr, packed.col_map, bias, 20, act,
                                        feature_major))


def tew_parts(layout, weight, seed=1):
    gen = torch.Generator().manual_seed(seed)
    ew_mask = (torch.rand(weight.shape, generator=gen) < 0.05) & ~layout.mask()
    return ew_mask, dense_to_csr(weight, ew_mask)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("feature_major", [False, True])
def test_tew_linear_matches_float64_reference(act, feature_major):
    layout, weight, packed = make_layer(seed=4)
    ew_mask, (crow, col, vals) = tew_parts(layout, weight)
    assert ew_mask.any()
    bias = torch.randn(layout.out_features)
    x = torch.randn(layout.in_features, 9) if feature_major else torch.randn(9, layout.in_features)
    out = tew_linear(x, packed.values, packed.row_idx, packed.row_ptr, packed.col_map, crow,
                     col, vals, bias, layout.out_features, act, feature_major)
    ref = reference(x, weight * (layout.mask() | ew_mask), bias, act, feature_major)
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-6


def test_opcheck_tew_linear():
    layout, weight, packed = make_layer(n=20, k=12, G=4, seed=2)
    _, (crow, col, vals) = tew_parts(layout, weight)
    args = (torch.randn(6, 12, requires_grad=True), packed.values.clone().requires_grad_(True),
            packed.row_idx, packed.row_ptr, packed.col_map, crow, col,
            vals.clone().requires_grad_(True), torch.randn(20, requires_grad=True), 20, "silu",
            False)
    torch.library.opcheck(tew_linear, args)


@pytest.mark.parametrize("feature_major", [False, True])
def test_gradients_match_masked_dense(feature_major):
    layout, weight, packed = make_layer(n=24, k=16, G=8, seed=7)
    x = torch.randn(16, 5, dtype=torch.float64) if feature_major else torch.randn(5, 16, dtype=torch.float64)
    values = packed.values.double().requires_grad_(True)
    bias = torch.randn(24, dtype=torch.float64, requires_grad=True)
    x.requires_grad_(True)
    out = tile_linear(x, values, packed.row_idx, packed.row_ptr, packed.col_map, bias, 24,
                      "gelu", feature_major)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    # reference: dense weight with a mask, differentiated by autograd
    dense = (weight.double() * layout.mask()).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    bias_ref = bias.detach().clone().requires_grad_(True)
    y = dense @ x_ref + bias_ref[:, None] if feature_major else x_ref @ dense.t() + bias_ref
    F.gelu(y).backward(grad_out)
    assert torch.allclose(x.grad, x_ref.grad)
    assert torch.allclose(bias.grad, bias_ref.grad)
    # the packed gradient, scattered back, is the dense gradient at the kept positions
    got = unpack_tensors(values.grad, packed.row_idx, packed.row_ptr, packed.col_map, 24, 16)
    assert torch.allclose(got, dense.grad * layout.mask())


def test_unknown_activation_is_rejected():
    layout, weight, packed = make_layer(n=8, k=4, G=4)
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        tile_linear(torch.randn(2, 4), packed.values, packed.row_idx, packed.row_ptr,
                    packed.col_map, None, 8, "tanh", False)


def test_apply_activation_matches_torch():
    y = torch.randn(100)
    assert torch.equal(apply_activation(y, "gelu"), F.gelu(y))
    assert torch.equal(apply_activation(y, "none"), y)
