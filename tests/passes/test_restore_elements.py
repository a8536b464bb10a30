"""restore_elements (TEW): restores the delta most important TW-pruned elements."""
import torch

from sparsefx_testing import MLP, make_context, run_passes
from sparsefx.passes.find_prunable import FindPrunable
from sparsefx.passes.prune_tiles import PruneTiles
from sparsefx.passes.restore_elements import RestoreElements
from sparsefx.passes.score_importance import ScoreImportance

BEFORE = [FindPrunable(), ScoreImportance(), PruneTiles()]


def test_restores_delta_best_pruned_elements():
    gm, ctx = make_context(MLP(), torch.randn(4, 48), G=16, sparsity=0.6, delta=0.05)
    graph_before = str(gm.graph)
    run_passes(gm, ctx, BEFORE)
    tw_masks = {n: i.layout.mask() for n, i in ctx.layers.items()}
    result = RestoreElements()(gm, ctx)
    assert str(gm.graph) == graph_before
    layers = ctx.prunable_layers()
    total = sum(i.numel for i in layers)
    restored = sum(int(i.ew_mask.sum()) for i in layers)
    assert restored == round(0.05 * total)
    # restored elements were pruned by TW, and are the best of the pruned ones
    worst_restored = min(i.importance[i.ew_mask].min() for i in layers if i.ew_mask.any())
    best_left = max(i.importance[~(tw_masks[i.name] | i.ew_mask)].max() for i in layers)
    assert worst_restored >= best_left
    assert all(not (tw_masks[i.name] & i.ew_mask).any() for i in layers)
    pruned = sum(i.numel - int(i.mask().sum()) for i in layers)
    assert abs(pruned - round(0.6 * total)) <= 16
    assert {r.action for r in result.records} == {"restored"}


def test_does_not_fire_without_delta():
    gm, ctx = make_context(MLP(), torch.randn(4, 48), G=16, sparsity=0.6)
    run_passes(gm, ctx, BEFORE)
    result = RestoreElements()(gm, ctx)
    assert not result.records and all(i.ew_mask is None for i in ctx.prunable_layers())


def test_second_run_changes_nothing():
    gm, ctx = make_context(MLP(), torch.randn(4, 48), G=16, sparsity=0.6, delta=0.02)
    run_passes(gm, ctx, BEFORE + [RestoreElements()])
    masks = {n: i.ew_mask.clone() for n, i in ctx.layers.items()}
    again = RestoreElements()(gm, ctx)
    assert not again.records
    assert all(torch.equal(masks[n], i.ew_mask) for n, i in ctx.layers.items())
