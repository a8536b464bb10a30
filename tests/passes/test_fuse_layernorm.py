"""fuse_layernorm: linear -> (+bias) -> (dropout) -> (+residual) -> LayerNorm, one op."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsefx.passes.fuse_layernorm import FuseLayernorm
from sparsefx.passes.propagate_layout import PropagateLayout
from sparsefx.runtime import layout

from sparsefx_testing import ops_in, rel, run

BRLN = torch.ops.sparsefx.bias_residual_layernorm.default
TILE = torch.ops.sparsefx.tile_linear.default


class Block(nn.Module):
    """The BERT "output" sub-block: dense -> dropout -> + residual -> LayerNorm."""

    def __init__(self, hidden=32, inner=64, separate_bias=False):
        super().__init__()
        self.dense = nn.Linear(inner, hidden, bias=not separate_bias)
        self.extra = nn.Parameter(torch.randn(hidden)) if separate_bias else None
        self.drop = nn.Dropout(0.1)
        self.norm = nn.LayerNorm(hidden)
        nn.init.normal_(self.norm.weight)
        nn.init.normal_(self.norm.bias)

    def forward(self, h, residual):
        y = self.dense(h)
        if self.extra is not None:
            y = y + self.extra
        return self.norm(residual + self.drop(y))


def _inputs(b=2, s=5):
    return torch.randn(b, s, 64), torch.randn(b, s, 32)


@pytest.mark.parametrize("separate_bias", [False, True])
def test_fuses_block(build, separate_bias):
    model = Block(separate_bias=separate_bias)
    gm, ctx = build(model, _inputs())
    x = _inputs()
    before = run(gm, *x)
    result = FuseLayernorm()(gm, ctx)
    assert result.modified and result.records[0].numbers["dropout"]
    assert result.records[0].numbers["bias"] == separate_bias
    assert len(ops_in(gm, BRLN)) == 1
    assert not [n for n in gm.graph.nodes if n.op == "call_module"]     # drop, norm gone
    torch.testing.assert_close(run(gm, *x), before, rtol=0, atol=0)     # same order: exact
    # independent reference: the eval model with the packed (masked) weight
    from sparsefx.patterns.tile import unpack
    p = gm.sparsefx_packed.dense
    w = unpack(type("P", (), {"values": p.values, "row_idx": p.row_idx, "row_ptr": p.row_ptr,
                              "col_map": p.col_map, "out_features": 32,
                              "in_features": 64})())
    y = F.linear(x[0].double(), w.double(), None if p.bias is None else p.bias.double())
    if separate_bias:
        y = y + model.extra.double()
    ref = F.layer_norm(x[1].double() + y, [32], model.norm.weight.double(),
                       model.norm.bias.double(), model.norm.eps)
    assert rel(run(gm, *x).double(), ref) < 1e-5
    assert not FuseLayernorm()(gm, ctx).modified


def test_broadcast_residual_is_not_fused(build):
    model = Block()
    gm, ctx = build(model, (torch.randn(2, 5, 64), torch.randn(1, 5, 32)))
    assert not FuseLayernorm()(gm, ctx).modified


def test_shared_linear_output_is_not_fused(build):
    class Shared(Block):
        def forward(self, h, residual):
            y = self.dense(h)
            return self.norm(residual + y), y

    gm, ctx = build(Shared(), _inputs())
    assert not FuseLayernorm()(gm, ctx).modified


def test_train_mode_dropout_is_not_fused(build):
    model = Block()
    gm, ctx = build(model, _inputs())
    gm.drop.train()
    assert not FuseLayernorm()(gm, ctx).modified


def test_feature_major_chain(build):
    """After the layout pass the sparse op is feature-major with a from-conversion after
    it; the pass then fuses feature-major."""
    model = Block()
    gm, ctx = build(model, _inputs(), layout="feature_major")
    x = _inputs()
    before = run(gm, *x)
    PropagateLayout()(gm, ctx)
    op = ops_in(gm, TILE)[0]
    assert op.args[8] is True and ops_in(gm, layout.from_feature_major)
    result = FuseLayernorm()(gm, ctx)
    assert result.modified and result.records[0].numbers["feature_major"]
    (fused,) = ops_in(gm, BRLN)
    assert fused.args[6] is True
    assert rel(run(gm, *x), before) < 1e-6
    assert not FuseLayernorm()(gm, ctx).modified
