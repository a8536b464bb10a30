"""propagate_layout: feature-major chains with transposes only at the boundaries."""
import pytest
import torch
from torch import nn

import sparsefx
from sparsefx.passes.fuse_epilogue import FuseEpilogue
from sparsefx.passes.fuse_layernorm import FuseLayernorm
from sparsefx.passes.propagate_layout import PropagateLayout
from sparsefx.runtime import layout

from sparsefx_testing import ops_in, rel, run

TILE = torch.ops.sparsefx.tile_linear.default
BRLN = torch.ops.sparsefx.bias_residual_layernorm.default


def _conversions(gm):
    return ops_in(gm, layout.to_feature_major) + ops_in(gm, layout.from_feature_major)


def _mlp():
    return nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 64), nn.Tanh(),
                         nn.Linear(64, 32))


def test_mlp_chain_has_two_transposes(build):
    gm, ctx = build(_mlp(), torch.randn(4, 32), layout="feature_major")
    x = torch.randn(7, 32)                  # another batch size: token dims stay free
    before = run(gm, x)
    result = PropagateLayout()(gm, ctx)
    assert result.modified
    assert all(n.args[8] is True for n in ops_in(gm, TILE))
    assert len(_conversions(gm)) == 2
    summary = result.records[-1].numbers
    assert summary["transposes"] == 2
    assert {r.numbers["direction"] for r in result.records[:-1]} == \
        {"to_feature_major", "from_feature_major"}
    assert rel(run(gm, x), before) < 1e-6
    x3 = torch.randn(2, 3, 32)              # and a 3-D input
    assert run(gm, x3).shape == (2, 3, 32)
    again = PropagateLayout()(gm, ctx)
    assert not again.modified and again.records[-1].numbers["transposes"] == 2


def test_broadcasting_op_is_a_boundary(build):
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(32, 32), nn.Linear(32, 32)
            self.scale = nn.Parameter(torch.randn(32))

        def forward(self, x):
            return self.b(self.a(x) * self.scale)   # [.., 32] * [32]: layout-dependent

    gm, ctx = build(Scaled(), torch.randn(4, 32), layout="feature_major")
    x = torch.randn(4, 32)
    before = run(gm, x)
    PropagateLayout()(gm, ctx)
    assert len(_conversions(gm)) == 4                # both layers isolated
    assert rel(run(gm, x), before) < 1e-6


def test_no_sparse_linear_no_change(build):
    model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU())
    gm, ctx = build(model, torch.randn(2, 3, 6, 6), layout="feature_major")
    result = PropagateLayout()(gm, ctx)
    assert not result.modified and not _conversions(gm)


def test_adjacent_pairs_are_removed(build):
    gm, ctx = build(_mlp(), torch.randn(4, 32), layout="feature_major")
    x = torch.randn(4, 32)
    before = run(gm, x)
    PropagateLayout()(gm, ctx)
    out = ops_in(gm, layout.from_feature_major)[0]
    with gm.graph.inserting_after(out):            # a redundant round trip
        back = gm.graph.call_function(layout.to_feature_major, (out,))
    with gm.graph.inserting_after(back):
        again = gm.graph.call_function(layout.from_feature_major, (back, *out.args[1:]))
    list(gm.graph.nodes)[-1].replace_input_with(out, again)
    gm.recompile()
    result = PropagateLayout()(gm, ctx)
    assert result.records[-1].numbers["removed_pairs"] == 1
    assert rel(run(gm, x), before) < 1e-6


def test_bert_block_feature_major_end_to_end():
    from transformers import BertConfig, BertModel
    model = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=128, vocab_size=100)).eval()
    ids = torch.randint(0, 100, (2, 8))
    sm = sparsefx.compile(model, ids, G=16, sparsity=0.5, layout="feature_major")
    pm = sparsefx.prune(model, ids, G=16, sparsity=0.5)
    fresh = torch.randint(0, 100, (2, 8))
    got, want = run(sm, fresh), run(pm, fresh)
    assert rel(got[0], want.last_hidden_state) < 1e-5
    assert all(n.args[8] is True for n in ops_in(sm, TILE))
    # FFN and both LayerNorms of every layer stay feature-major
    fused = ops_in(sm, BRLN)
    assert len(fused) == 4 and sum(n.args[6] is True for n in fused) >= 3
    # per layer: q, k, v leave for attention, its output comes back; plus entry/exit
    # and the pooler's two
    assert len(_conversions(sm)) == 2 * 4 + 2 + 2


def test_numerics_vs_unrewritten_gpt2():
    from transformers import GPT2Config, GPT2Model
    model = GPT2Model(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100,
                                 n_positions=16, use_cache=False)).eval()
    ids = torch.randint(0, 100, (2, 8))
    sm = sparsefx.compile(model, ids, G=16, sparsity=0.5, layout="feature_major")
    pm = sparsefx.prune(model, ids, G=16, sparsity=0.5)
    fresh = torch.randint(0, 100, (2, 8))
    assert rel(run(sm, fresh)[0], run(pm, fresh).last_hidden_state) < 1e-5
    assert all(n.args[8] is True for n in ops_in(sm, TILE))


def test_does_not_fire_with_the_default_row_major_layout(build):
    gm, ctx = build(_mlp(), torch.randn(4, 32))
    code = gm.code
    result = PropagateLayout()(gm, ctx)
    assert not result.modified and gm.code == code and not _conversions(gm)
