"""clean_graph: dense weights of rewritten layers leave the module and its state_dict."""
import torch

from sparsefx_testing import MLP, FunctionalLinear, make_context, rel_err, run_passes, small_bert
from sparsefx.passes import analysis_passes
from sparsefx.passes.clean_graph import CleanGraph
from sparsefx.passes.pack_weights import PackWeights
from sparsefx.passes.substitute_ops import SubstituteOps


def rewritten(model, x, **options):
    gm, ctx = make_context(model, x, **options)
    gm, _ = run_passes(gm, ctx, analysis_passes() + [PackWeights(), SubstituteOps()])
    return gm, ctx


def test_removes_dense_modules_and_weights():
    model, x = MLP(), torch.randn(4, 48)
    gm, ctx = rewritten(model, x, G=16, sparsity=0.5)
    expected = gm(x)
    assert "fc1.weight" in gm.state_dict()
    result = CleanGraph()(gm, ctx)
    assert result.modified
    keys = gm.state_dict().keys()
    assert not any(k.startswith(("fc1.", "fc2.", "fc3.")) for k in keys)
    assert torch.equal(gm(x), expected)


def test_removes_get_attr_weights_of_exported_graphs():
    model = small_bert()
    ids = torch.randint(0, 100, (2, 8))
    gm, ctx = rewritten(model, ids, G=16, sparsity=0.5)
    expected = gm(ids).last_hidden_state
    CleanGraph()(gm, ctx)
    keys = gm.state_dict().keys()
    assert "encoder.layer.0.attention.self.query.weight" not in keys
    assert "encoder.layer.0.attention.output.LayerNorm.weight" in keys   # untouched
    assert rel_err(gm(ids).last_hidden_state, expected) == 0.0


def test_keeps_layers_that_were_not_rewritten():
    model, x = FunctionalLinear(), torch.randn(4, 40)
    gm, ctx = rewritten(model, x, G=16, sparsity=0.5, exclude="w2")
    CleanGraph()(gm, ctx)
    assert "w2" in gm.state_dict() and "w1" not in gm.state_dict()


def test_second_run_changes_nothing():
    model, x = MLP(), torch.randn(4, 48)
    gm, ctx = rewritten(model, x, G=16, sparsity=0.5)
    CleanGraph()(gm, ctx)
    code, keys = gm.code, list(gm.state_dict())
    again = CleanGraph()(gm, ctx)
    assert not again.modified and gm.code == code and list(gm.state_dict()) == keys
