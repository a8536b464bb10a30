"""fuse_epilogue: bias add and ReLU/GELU/SiLU move into the sparse op."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsefx.passes.fuse_epilogue import FuseEpilogue, get_op_arg
from sparsefx.runtime import conv

from sparsefx_testing import ops_in, rel, run

TILE = torch.ops.sparsefx.tile_linear.default


class FunctionalMLP(nn.Module):
    """F.linear without bias followed by ``+ b`` then an activation."""

    def __init__(self, act):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(64, 32)), nn.Parameter(torch.randn(64))
        self.w2 = nn.Parameter(torch.randn(32, 64))
        self.act = act

    def forward(self, x):
        return F.linear(self.act(F.linear(x, self.w1) + self.b1), self.w2)


@pytest.mark.parametrize("act,name", [(nn.ReLU(), "relu"), (nn.GELU(), "gelu"),
                                      (nn.SiLU(), "silu"), (F.relu, "relu"),
                                      (F.gelu, "gelu"), (F.silu, "silu")])
def test_fuses_bias_and_activation(build, act, name):
    model = FunctionalMLP(act)
    gm, ctx = build(model, torch.randn(8, 32))
    x = torch.randn(11, 32)
    before = run(gm, x)
    result = FuseEpilogue()(gm, ctx)
    assert result.modified
    assert [r.numbers["absorbed"] for r in result.records] == ["bias", name]
    first = ops_in(gm, TILE)[0]
    assert get_op_arg(first, "activation") == name
    assert get_op_arg(first, "bias").target == "b1"
    assert len([n for n in gm.graph.nodes if n.op in ("call_function", "call_module",
                                                        "call_method")]) == 2
    after = run(gm, x)
    assert rel(after, before) < 1e-6
    # independent reference: the masked dense model
    from sparsefx.patterns.tile import unpack_tensors
    packed = gm.sparsefx_packed
    w1 = unpack_tensors(packed.w1.values, packed.w1.row_idx, packed.w1.row_ptr,
                        packed.w1.col_map, 64, 32)
    w2 = unpack_tensors(packed.w2.values, packed.w2.row_idx, packed.w2.row_ptr,
                        packed.w2.col_map, 32, 64)
    ref = F.linear(act(F.linear(x.double(), w1.double()) + model.b1.double()), w2.double())
    assert rel(after.double(), ref) < 1e-5
    assert not FuseEpilogue()(gm, ctx).modified


def test_tanh_gelu_and_shared_output_do_not_fuse(build):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(32, 64), nn.Linear(32, 64)

        def forward(self, x):
            y = self.a(x)
            return F.gelu(y, approximate="tanh"), torch.relu(self.b(x)) + 0, y

    gm, ctx = build(Model(), torch.randn(4, 32))
    x = torch.randn(4, 32)
    before = run(gm, x)
    result = FuseEpilogue()(gm, ctx)
    # b's relu fuses; a's output has two users and a tanh GELU: nothing for it
    assert [r.layer for r in result.records] == ["b"]
    a_node = next(n for n in ops_in(gm, TILE) if n.meta["sparsefx.layer"].name == "a")
    assert get_op_arg(a_node, "activation") == "none"
    for got, want in zip(run(gm, x), before):
        torch.testing.assert_close(got, want)


def test_bias_of_wrong_shape_is_not_fused(build):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(32, 16))
            self.s = nn.Parameter(torch.randn(1))

        def forward(self, x):
            return F.linear(x, self.w) + self.s        # broadcast scalar, not a bias

    gm, ctx = build(Model(), torch.randn(4, 16))
    assert not FuseEpilogue()(gm, ctx).modified


def test_conv_activation_fuses(build):
    model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.SiLU())
    gm, ctx = build(model, torch.randn(2, 3, 8, 8))
    x = torch.randn(3, 3, 8, 8)
    before = run(gm, x)
    result = FuseEpilogue()(gm, ctx)
    convs = ops_in(gm, conv.tile_conv)
    assert result.modified and convs
    assert all(get_op_arg(n, "activation") in ("relu", "silu") for n in convs)
    for n in convs:   # no activation module left after a sparse conv
        assert all(u.op != "call_module" for u in n.users)
    torch.testing.assert_close(run(gm, x), before)
    assert not FuseEpilogue()(gm, ctx).modified
