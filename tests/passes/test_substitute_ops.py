"""substitute_ops: matmul nodes become sparsefx ops with identical numbers."""
import torch

from sparsefx_testing import CNN, MLP, Conv1dNet, FunctionalLinear, make_context, randomize_batchnorm, rel_err, run_passes
from sparsefx import prune
from sparsefx.passes import analysis_passes
from sparsefx.passes.pack_weights import PackWeights
from sparsefx.passes.substitute_ops import SubstituteOps
from sparsefx.runtime import conv

TILE = torch.ops.sparsefx.tile_linear.default
TEW = torch.ops.sparsefx.tew_linear.default


def rewrite(model, x, **options):
    gm, ctx = make_context(model, x, **options)
    gm, _ = run_passes(gm, ctx, analysis_passes() + [PackWeights()])
    result = SubstituteOps()(gm, ctx)
    return gm, ctx, result


def targets(gm):
    return [n.target for n in gm.graph.nodes if n.op in ("call_function", "call_module")]


def test_linear_modules_become_tile_linear():
    model, x = MLP(), torch.randn(5, 48)
    gm, ctx, result = rewrite(model, x, G=16, sparsity=0.75)
    assert result.modified
    assert targets(gm).count(TILE) == 3 and "fc1" not in targets(gm)
    node = next(n for n in gm.graph.nodes if n.target == TILE)
    assert node.meta["tensor_meta"].shape == (5, 96)
    assert rel_err(gm(x), prune(model, x, G=16, sparsity=0.75)(x)) < 1e-5


def test_functional_linear_and_tew():
    model, x = FunctionalLinear(), torch.randn(3, 40)
    gm, ctx, _ = rewrite(model, x, G=16, sparsity=0.6, delta=0.05)
    assert targets(gm).count(TEW) == 2
    assert rel_err(gm(x), prune(model, x, G=16, sparsity=0.6, delta=0.05)(x)) < 1e-5


def test_convs_become_im2col_tile_ops():
    model = randomize_batchnorm(CNN()).eval()
    x = torch.randn(2, 3, 12, 12)
    gm, ctx, _ = rewrite(model, x, G=16, sparsity=0.7)
    assert conv.tile_conv in targets(gm)
    assert "depthwise" in targets(gm)                     # grouped conv stays dense
    assert rel_err(gm(x), prune(model, x, G=16, sparsity=0.7)(x)) < 1e-5
    model1, x1 = Conv1dNet(), torch.randn(2, 8, 21)
    gm1, _, _ = rewrite(model1, x1, G=16, sparsity=0.7)
    assert conv.tile_conv in targets(gm1)
    assert rel_err(gm1(x1), prune(model1, x1, G=16, sparsity=0.7)(x1)) < 1e-5


def test_does_not_fire_when_nothing_is_packed():
    model, x = MLP(), torch.randn(5, 48)
    gm, ctx, result = rewrite(model, x, G=16, sparsity=0.0)
    assert not result.modified and TILE not in targets(gm)


def test_second_run_changes_nothing():
    model, x = MLP(), torch.randn(5, 48)
    gm, ctx, _ = rewrite(model, x, G=16, sparsity=0.5)
    code = gm.code
    again = SubstituteOps()(gm, ctx)
    assert not again.modified and gm.code == code
