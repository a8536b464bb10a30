"""fold_pruned_features: a layer's pruned-away outputs go into the next layer's bias."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsefx.passes._match import shape_of
from sparsefx.passes.fold_pruned_features import FoldPrunedFeatures, _padded_width
from sparsefx.passes.fuse_epilogue import FuseEpilogue, get_op_arg
from sparsefx.patterns.tile import unpack_tensors

from sparsefx_testing import ops_in, rel, run

TILE = torch.ops.sparsefx.tile_linear.default
ACTS = {"none": nn.Identity(), "relu": nn.ReLU(), "gelu": nn.GELU(), "silu": nn.SiLU()}


class TwoLayers(nn.Module):
    """``fc2(act(fc1(x)))``, optionally through a dropout; fc1's output optionally
    returned as well (a second reader)."""

    def __init__(self, act="gelu", fc2_bias=True, dropout=False, expose_hidden=False):
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.act = ACTS[act]
        self.drop = nn.Dropout(0.1) if dropout else nn.Identity()
        self.fc2 = nn.Linear(64, 24, bias=fc2_bias)
        self.expose_hidden = expose_hidden
        with torch.no_grad():
            self.fc1.bias.normal_(0, 1.0)       # large enough that act(b) is not ~0
            self.fc1.weight[::3] *= 0.05        # weak outputs, for column pruning to take

    def forward(self, x):
        h = self.act(self.fc1(x))
        y = self.fc2(self.drop(h))
        return (y, h) if self.expose_hidden else y


def _fused(build, model, **options):
    """``(gm, ctx)`` after substitution and epilogue fusion, with fc1 column-pruned."""
    gm, ctx = build(model, torch.randn(8, 32), column_share=0.5, **options)
    gm = FuseEpilogue()(gm, ctx).gm
    fc1 = gm.sparsefx_packed.fc1
    assert fc1.col_map.numel() < 64, "the test needs fc1 to lose whole output features"
    return gm, ctx


def _dense(packed, n_out, n_in):
    return unpack_tensors(packed.values, packed.row_idx, packed.row_ptr, packed.col_map,
                          n_out, n_in).double()


@pytest.mark.parametrize("act", ["none", "relu", "gelu", "silu"])
@pytest.mark.parametrize("fc2_bias", [True, False])
def test_pruned_features_fold_into_the_next_layer(build, act, fc2_bias):
    model = TwoLayers(act, fc2_bias)
    gm, ctx = _fused(build, model)
    fc1, fc2 = gm.sparsefx_packed.fc1, gm.sparsefx_packed.fc2
    w1, w2 = _dense(fc1, 64, 32), _dense(fc2, 24, 64)
    b1 = fc1.bias.detach().double()
    b2 = fc2.bias.detach().double() if fc2_bias else torch.zeros(24, dtype=torch.float64)
    kept = fc1.col_map.long().sort().values
    pruned = sorted(set(range(64)) - set(kept.tolist()))
    rows_at_pruned = int(torch.isin(fc2.row_idx.long(), torch.tensor(pruned)).sum())
    assert 0 < rows_at_pruned < fc2.values.shape[0], "fc2 must keep rows on both sides"
    x = torch.randn(13, 32)
    before = run(gm, x)

    result = FoldPrunedFeatures()(gm, ctx)

    assert result.modified
    [record] = result.records
    assert record.action == "folded" and record.layer == "fc1"
    assert record.numbers == {"into": "fc2", "features": len(pruned),
                              "padding": record.numbers["padding"],
                              "consumer_rows_removed": rows_at_pruned,
                              "consumer_rows_left": fc2.values.shape[0] - rows_at_pruned}
    first, second = ops_in(gm, TILE)
    n_kept = kept.numel()
    width = -(-n_kept // 8) * 8                    # padded to 16 bytes in half precision
    assert record.numbers.get("padding") == width - n_kept
    assert get_op_arg(first, "out_features") == width
    assert shape_of(first)[-1] == width
    new1, new2 = gm.sparsefx_packed.fc1, gm.sparsefx_packed.fc2
    assert torch.equal(new1.col_map, torch.arange(width, dtype=torch.int32))
    assert new1.out_features == width and new2.in_features == width
    hidden = torch.ops.sparsefx.tile_linear(x, new1.values, new1.row_idx, new1.row_ptr,
                                            new1.col_map, new1.bias, width, act)
    assert torch.equal(hidden[:, n_kept:], torch.zeros(13, width - n_kept))
    assert new2.values.shape[0] == fc2.values.shape[0] - rows_at_pruned
    for t in range(new2.row_ptr.numel() - 1):      # rows stay ascending per tile
        rows = new2.row_idx[new2.row_ptr[t]:new2.row_ptr[t + 1]]
        assert bool((rows[1:] > rows[:-1]).all())
    if act in ("relu", "gelu", "silu") or fc2_bias:
        assert get_op_arg(second, "bias") is not None
    after = run(gm, x)
    assert after.shape == before.shape
    assert rel(after, before) < 1e-5
    # independent reference: the masked dense layers in float64, all 64 features
    activation = ACTS[act].double()
    ref = F.linear(activation(F.linear(x.double(), w1, b1)), w2, b2)
    assert rel(after.double(), ref) < 1e-5
    assert not FoldPrunedFeatures()(gm, ctx).modified


@pytest.mark.parametrize("n_kept,G,width", [(2387, 128, 2392), (2304, 128, 2304),
                                            (13, 12, 16), (19, 10, 19), (1, 16, 8)])
def test_compacted_width_is_padded_to_16_bytes_where_the_edge_tile_has_room(n_kept, G,
                                                                            width):
    assert _padded_width(n_kept, G, "gelu") == width


def test_consumer_without_bias_gets_none_when_the_term_is_zero(build):
    model = TwoLayers("relu", fc2_bias=False)
    with torch.no_grad():
        model.fc1.bias.fill_(-1.0)     # relu(-1) = 0: the pruned features hold zeros
    gm, ctx = _fused(build, model)
    x = torch.randn(5, 32)
    before = run(gm, x)
    assert FoldPrunedFeatures()(gm, ctx).modified
    assert get_op_arg(ops_in(gm, TILE)[1], "bias") is None
    assert gm.sparsefx_packed.fc2.bias is None
    assert rel(run(gm, x), before) < 1e-5


def test_folds_through_an_inference_dropout(build):
    gm, ctx = _fused(build, TwoLayers("gelu", dropout=True))
    x = torch.randn(7, 32)
    before = run(gm, x)
    assert FoldPrunedFeatures()(gm, ctx).modified
    width = gm.sparsefx_packed.fc1.out_features
    dropouts = [n for n in gm.graph.nodes if n.op == "call_module" and "drop" in n.target]
    assert dropouts and all(shape_of(n)[-1] == width for n in dropouts)
    assert rel(run(gm, x), before) < 1e-5


def test_a_second_reader_keeps_the_features(build):
    gm, ctx = _fused(build, TwoLayers("gelu", expose_hidden=True))
    x = torch.randn(7, 32)
    before = run(gm, x)
    result = FoldPrunedFeatures()(gm, ctx)
    assert not result.modified and result.records == []
    assert get_op_arg(ops_in(gm, TILE)[0], "out_features") == 64
    for got, want in zip(run(gm, x), before):
        torch.testing.assert_close(got, want)


def test_a_model_in_training_mode_keeps_the_features(build):
    gm, ctx = _fused(build, TwoLayers("gelu"))
    ctx.model.train()
    result = FoldPrunedFeatures()(gm, ctx)
    assert not result.modified
    [record] = result.records
    assert record.action == "fold_skipped" and "training mode" in record.numbers["reason"]
    assert get_op_arg(ops_in(gm, TILE)[0], "out_features") == 64


def test_a_reader_that_is_not_a_tile_layer_keeps_the_features(build):
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(32, 64)

        def forward(self, x):
            return torch.tanh(self.fc1(x))

    gm, ctx = build(Residual(), torch.randn(8, 32), column_share=0.5)
    assert gm.sparsefx_packed.fc1.col_map.numel() < 64
    result = FoldPrunedFeatures()(gm, ctx)
    assert not result.modified and result.records == []


def test_compile_folds_and_matches_the_pruned_model():
    import sparsefx
    model = TwoLayers("gelu").eval()
    x = torch.randn(6, 32)
    sm = sparsefx.compile(model, x, G=16, sparsity=0.5, column_share=0.5)
    reference = sparsefx.prune(model, x, G=16, sparsity=0.5, column_share=0.5)
    folded = [c for p in sm.log.passes if p.name == "fold_pruned_features" for c in p.records]
    assert [c["layer"] for c in folded] == ["fc1"]
    assert rel(run(sm, x), run(reference, x)) < 1e-5


class WideTwoLayers(nn.Module):
    """A BERT-like block shape, small: 256 -> 1024 (GELU) -> 256."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(256, 1024), nn.Linear(1024, 256)
        with torch.no_grad():
            self.fc1.bias.normal_(0, 1.0)
            self.fc2.weight *= 2.0            # as large as fc1's: both keep weights
            self.fc1.weight[::3] *= 0.05

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


@pytest.mark.cuda
@pytest.mark.parametrize("layout", ["row_major", "feature_major"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_folded_layers_run_on_the_gpu_kernels(layout, dtype):
    """The compacted producer and the reduced reader through kernel choice and the GPU
    kernels, fp16/bf16, odd token count, against the float64 masked dense model."""
    import sparsefx
    model = WideTwoLayers().eval().to("cuda", dtype)
    x = torch.randn(1000, 256, device="cuda", dtype=dtype)
    options = dict(G=64, sparsity=0.75, column_share=0.5)
    # the same masks (scored on the same rounded weights), run in float64 on the CPU
    reference = sparsefx.prune(model, x, **options).cpu().double()
    sm = sparsefx.compile(model, x, layout=layout, **options)
    [record] = [r for p in sm.log.passes if p.name == "fold_pruned_features"
                for r in p.records]
    assert record["layer"] == "fc1" and record["consumer_rows_removed"] > 0
    assert record["consumer_rows_left"] > 0
    fresh = torch.randn(777, 256).to(dtype)
    got = run(sm, fresh.to("cuda")).double().cpu()
    want = run(reference, fresh.double())
    assert rel(got, want) < (1e-2 if dtype is torch.bfloat16 else 2e-3)
