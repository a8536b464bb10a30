"""find_prunable: which nodes become layers, which are skipped and why."""
import re

import torch
from torch import nn

from sparsefx_testing import CNN, MLP, Conv1dNet, FunctionalLinear, make_context, small_gpt2
from sparsefx.passes.find_prunable import FindPrunable
from sparsefx.passes.infra import LAYER_META


def test_finds_linear_modules_and_skips_small_ones():
    gm, ctx = make_context(MLP(), torch.randn(4, 48), G=32)
    graph_before = str(gm.graph)
    result = FindPrunable()(gm, ctx)
    assert result.modified
    assert str(gm.graph) == graph_before                       # analysis only
    assert [i.name for i in ctx.prunable_layers()] == ["fc1", "fc2", "fc3"]
    ctx2 = make_context(MLP(), torch.randn(4, 48), G=64)[1]
    FindPrunable()(make_context(MLP(), torch.randn(4, 48), G=64)[0], ctx2)
    assert not ctx2.layers["fc3"].prunable
    assert "40 output features < G=64" in ctx2.layers["fc3"].skip_reason
    node = next(n for n in gm.graph.nodes if n.target == "fc1")
    assert node.meta[LAYER_META].matrix_shape == (96, 48)


def test_conv_views_and_grouped_conv_skipped():
    gm, ctx = make_context(CNN().eval(), torch.randn(2, 3, 8, 8), G=16)
    FindPrunable()(gm, ctx)
    assert ctx.layers["conv2"].matrix_shape == (48, 32 * 9)
    assert ctx.layers["conv2"].kind == "conv2d"
    assert not ctx.layers["depthwise"].prunable
    assert "groups=48" in ctx.layers["depthwise"].skip_reason
    gm, ctx = make_context(Conv1dNet(), torch.randn(2, 8, 20), G=16)
    FindPrunable()(gm, ctx)
    assert ctx.layers["conv"].kind == "conv1d" and ctx.layers["conv"].matrix_shape == (32, 40)


def test_functional_linear_on_parameters():
    gm, ctx = make_context(FunctionalLinear(), torch.randn(3, 40), G=16)
    FindPrunable()(gm, ctx)
    assert {i.weight_attr for i in ctx.prunable_layers()} == {"w1", "w2"}
    assert ctx.layers["w1"].bias_attr == "b1" and ctx.layers["w2"].bias_attr is None


def test_hf_conv1d_addmm_is_transposed():
    model = small_gpt2()
    gm, ctx = make_context(model, torch.randint(0, 100, (1, 8)), G=16)
    FindPrunable()(gm, ctx)
    info = ctx.layers["h.0.mlp.c_fc"]
    assert info.kind == "addmm"
    assert info.weight_shape == (64, 256) and info.matrix_shape == (256, 64)


def test_exclude_by_name_regex_and_callable():
    for exclude in ("fc2", re.compile(r"fc[23]"), lambda name, shape: shape[0] == 40,
                    ["fc1", "fc3"]):
        gm, ctx = make_context(MLP(), torch.randn(4, 48), G=8, exclude=exclude)
        FindPrunable()(gm, ctx)
        excluded = {i.name for i in ctx.layers.values() if not i.prunable}
        assert excluded, exclude
        assert all(ctx.layers[n].skip_reason == "excluded by exclude=" for n in excluded)


def test_tied_weights_are_skipped():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(16, 16)
            self.b = nn.Linear(16, 16)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    gm, ctx = make_context(Tied(), torch.randn(2, 16), G=4)
    FindPrunable()(gm, ctx)
    assert not ctx.layers["b"].prunable and "tied" in ctx.layers["b"].skip_reason


def test_does_not_fire_without_weights():
    class NoParams(nn.Module):
        def forward(self, x, w):
            return torch.nn.functional.linear(x, w)

    gm, ctx = make_context(NoParams(), (torch.randn(2, 8), torch.randn(8, 8)), G=4)
    result = FindPrunable()(gm, ctx)
    assert not result.modified and not ctx.layers


def test_second_run_changes_nothing():
    gm, ctx = make_context(MLP(), torch.randn(4, 48), G=16)
    FindPrunable()(gm, ctx)
    layers = dict(ctx.layers)
    again = FindPrunable()(gm, ctx)
    assert not again.modified and not again.records
    assert ctx.layers == layers
