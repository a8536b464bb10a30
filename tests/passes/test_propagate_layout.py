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


def test_mlp_chain_has_one_transpose(build):
    gm, ctx = build(_mlp(), torch.randn(4, 32), layout="feature_major")
    x = torch.randn(7, 32)                  # another batch size: token dims stay free
    before = run(gm, x)
    result = PropagateLayout()(gm, ctx)
    assert result.modified
    # the chain runs feature-major; the last layer reads it through a transposed view
    # and writes row-major itself, so no transpose follows it
    assert [n.args[8] for n in ops_in(gm, TILE)] == [True, True, False]
    assert ops_in(gm, TILE)[-1].args[0].target is torch.ops.aten.t.default
    assert len(_conversions(gm)) == 1
    summary = result.records[-1].numbers
    assert summary["transposes"] == 1 and summary["absorbed"] == 1
    assert [r.numbers["direction"] for r in result.records[:-1]] == \
        ["to_feature_major", "from_feature_major"]     # the one left, the one absorbed
    assert [r.action for r in result.records[:-1]] == ["converted", "absorbed"]
    assert rel(run(gm, x), before) < 1e-6
    x3 = torch.randn(2, 3, 32)              # and a 3-D input
    assert run(gm, x3).shape == (2, 3, 32)
    assert rel(run(gm, x3), run(_reference(gm, ctx), x3)) < 1e-6
    code = gm.code
    again = PropagateLayout()(gm, ctx)
    assert not again.modified and gm.code == code
    assert again.records[-1].numbers["transposes"] == 1


def _reference(gm, ctx):
    """The module the context was built from, pruned the same way (masked dense)."""
    return sparsefx.prune(ctx.model, torch.randn(4, 32), G=ctx.config.G,
                          sparsity=ctx.config.sparsity)


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
    # both layers isolated: each reads a feature-major copy of its input and writes
    # row-major itself (the transpose after it was absorbed)
    assert len(ops_in(gm, layout.to_feature_major)) == 2
    assert not ops_in(gm, layout.from_feature_major)
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
    view = ops_in(gm, torch.ops.aten.t.default)[0]    # last layer reads fm value y
    y = view.args[0]
    with gm.graph.inserting_before(view):            # a redundant round trip of y
        out = gm.graph.call_function(layout.from_feature_major, (y, None, [4, 64]))
        back = gm.graph.call_function(layout.to_feature_major, (out,))
    view.replace_input_with(y, back)
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
    tiles = ops_in(sm, TILE)
    # q, k, v read the feature-major LayerNorm output through a transposed view and
    # write row-major for attention; output projection, FFN and pooler run
    # feature-major
    qkv = [n for n in tiles if n.args[8] is False]
    assert len(qkv) == 3 * 2 and all(n.args[0].target is torch.ops.aten.t.default
                                     for n in qkv)
    assert sum(n.args[8] is True for n in tiles) == 3 * 2 + 1
    # FFN and both LayerNorms of every layer stay feature-major
    fused = ops_in(sm, BRLN)
    assert len(fused) == 4 and sum(n.args[6] is True for n in fused) >= 3
    # attention's output comes back in one copy; no conversion is left inside a layer:
    # only entry/exit and the pooler's two
    assert len(ops_in(sm, layout.heads_to_feature_major)) == 2
    assert len(_conversions(sm)) == 2 + 2


def test_numerics_vs_unrewritten_gpt2():
    from transformers import GPT2Config, GPT2Model
    model = GPT2Model(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100,
                                 n_positions=16, use_cache=False)).eval()
    ids = torch.randint(0, 100, (2, 8))
    sm = sparsefx.compile(model, ids, G=16, sparsity=0.5, layout="feature_major")
    pm = sparsefx.prune(model, ids, G=16, sparsity=0.5)
    fresh = torch.randint(0, 100, (2, 8))
    assert rel(run(sm, fresh)[0], run(pm, fresh).last_hidden_state) < 1e-5
    # every sparse op reads a feature-major value (directly, or through a transposed
    # view when it writes row-major for attention)
    assert all(n.args[8] is True or n.args[0].target is torch.ops.aten.t.default
               for n in ops_in(sm, TILE))


def test_does_not_fire_with_the_default_row_major_layout(build):
    gm, ctx = build(_mlp(), torch.randn(4, 32))
    code = gm.code
    result = PropagateLayout()(gm, ctx)
    assert not result.modified and gm.code == code and not _conversions(gm)


class _Attention(nn.Module):
    """q projection → SDPA → ``transpose(1, 2).contiguous().reshape`` → output
    projection + residual LayerNorm (HF's SDPA path), traced by torch.export."""

    def __init__(self):
        super().__init__()
        self.q, self.o, self.ln = nn.Linear(32, 32), nn.Linear(32, 32), nn.LayerNorm(32)

    def forward(self, x):
        if isinstance(x, torch.fx.Proxy):        # force the torch.export frontend
            raise TypeError("traced with torch.export only")
        B, S, _ = x.shape
        q = self.q(x).view(B, S, 4, 8).transpose(1, 2)
        a = torch.nn.functional.scaled_dot_product_attention(q, q, q)
        a = a.transpose(1, 2).contiguous().reshape(B, S, 32)
        return self.ln(self.o(a) + x)


def test_attention_output_converts_in_one_copy():
    model, x = _Attention().eval(), torch.randn(2, 6, 32)
    sm = sparsefx.compile(model, x, G=16, sparsity=0.5, layout="feature_major")
    assert sm.log.capture["frontend"] == "torch.export"
    assert len(ops_in(sm, layout.heads_to_feature_major)) == 1
    pm = sparsefx.prune(model, x, G=16, sparsity=0.5)
    fresh = torch.randn(2, 6, 32)
    assert rel(run(sm, fresh), run(pm, fresh)) < 1e-5
