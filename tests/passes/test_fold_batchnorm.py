"""fold_batchnorm: conv/linear + eval BN folded before scoring; compile still == prune."""
import copy

import pytest
import torch
from torch import fx, nn

import sparsefx
from sparsefx.capture import propagate_shapes
from sparsefx.passes.fold_batchnorm import FoldBatchnorm
from sparsefx.passes.infra import PassContext

from sparsefx_testing import rel, run


def _randomise(bn):
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)


def _cnn(bias=True):
    m = nn.Sequential(nn.Conv2d(3, 32, 3, bias=bias), nn.BatchNorm2d(32), nn.ReLU(),
                      nn.Conv2d(32, 32, 3, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                      nn.Flatten(), nn.Linear(32 * 16, 32), nn.BatchNorm1d(32))
    for i in (1, 4, 8):
        _randomise(m[i])
    return m.eval()


def _bn_nodes(gm):
    return [n for n in gm.graph.nodes if "batch_norm" in str(n.target)
            or (n.op == "call_module" and isinstance(gm.get_submodule(n.target),
                                                     nn.modules.batchnorm._BatchNorm))]


def _traced(model, x, frontend):
    if frontend == "symbolic_trace":
        gm = fx.symbolic_trace(copy.deepcopy(model))
        propagate_shapes(gm, (x,), {})
        return gm
    return torch.export.export(copy.deepcopy(model), (x,), strict=False).module()


@pytest.mark.parametrize("frontend", ["symbolic_trace", "torch.export"])
@pytest.mark.parametrize("bias", [True, False])
def test_folds_and_keeps_numerics(frontend, bias):
    model = _cnn(bias)
    gm = _traced(model, torch.randn(2, 3, 8, 8), frontend)
    result = FoldBatchnorm()(gm, PassContext(config=None))
    assert result.modified
    assert [r.action for r in result.records] == ["folded"] * 3
    assert not _bn_nodes(gm)
    # fresh input (export graphs are specialised to their batch size)
    x = torch.randn(2 if frontend == "torch.export" else 5, 3, 8, 8)
    assert rel(run(gm, x), run(model, x)) < 1e-5
    again = FoldBatchnorm()(gm, PassContext(config=None))
    assert not again.modified and not again.records


def test_train_mode_bn_is_not_folded():
    model = _cnn().train()
    gm = fx.symbolic_trace(copy.deepcopy(model))
    result = FoldBatchnorm()(gm, PassContext(config=None))
    assert not result.modified and len(_bn_nodes(gm)) == 3
    assert all("training" in r.numbers["reason"] for r in result.records)


def test_conv_with_other_users_is_not_folded():
    class TwoUsers(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    model = TwoUsers().eval()
    _randomise(model.bn)
    gm = fx.symbolic_trace(copy.deepcopy(model))
    result = FoldBatchnorm()(gm, PassContext(config=None))
    assert not result.modified and len(_bn_nodes(gm)) == 1
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(run(gm, x), run(model, x))


def test_linear_with_3d_output_is_not_folded():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(4)).eval()   # BN over dim 1 = L
    x = torch.randn(2, 4, 8)
    gm = _traced(model, x, "symbolic_trace")
    result = FoldBatchnorm()(gm, PassContext(config=None))
    assert not result.modified
    assert "not 2-D" in result.records[0].numbers["reason"]


@pytest.mark.parametrize("sparsity", [0.5, 0.75])
def test_compile_matches_prune(sparsity):
    model = _cnn(bias=False)
    x = torch.randn(4, 3, 8, 8)
    sm = sparsefx.compile(model, x, G=16, sparsity=sparsity)
    pm = sparsefx.prune(model, x, G=16, sparsity=sparsity)
    assert not _bn_nodes(sm)
    fresh = torch.randn(6, 3, 8, 8)
    assert rel(run(sm, fresh), run(pm, fresh)) < 1e-5
    # prune masked the unfolded weights: the folded weight's zeros are the same elements
    folded_scale = (pm[1].weight / torch.sqrt(pm[1].running_var + pm[1].eps)).detach()
    folded = pm[0].weight.detach() * folded_scale.view(-1, 1, 1, 1)
    assert torch.equal(folded == 0, pm.sparsefx_masks["0.weight"] == 0)


def test_scores_use_folded_weights():
    """A BN that scales one channel up makes that channel's weights survive."""
    model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32)).eval()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].weight.fill_(1.0)
        model[1].weight[:16] = 10.0                # first 16 outputs matter 10x more
    pm = sparsefx.prune(model, torch.randn(4, 16), G=16, sparsity=0.5)
    mask = pm.sparsefx_masks["0.weight"]
    assert mask[:16].all() and not mask[16:].any()


@pytest.mark.parametrize("frontend", ["symbolic_trace", "torch.export"])
def test_traced_from_model_is_not_mutated(frontend):
    """A traced graph shares leaf modules/parameters with its model: folding must give
    the graph new parameters, never write into the model's."""
    model = _cnn(bias=False)
    x = torch.randn(2, 3, 8, 8)
    want = run(model, x)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    if frontend == "symbolic_trace":
        gm = fx.symbolic_trace(model)               # no copy on purpose
        propagate_shapes(gm, (x,), {})
    else:
        gm = torch.export.export(model, (x,), strict=False).module()
    assert FoldBatchnorm()(gm, PassContext(config=None)).modified
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert model[0].bias is None
    torch.testing.assert_close(run(model, x), want, rtol=0, atol=0)
    assert rel(run(gm, x), want) < 1e-5
