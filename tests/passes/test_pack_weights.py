"""pack_weights: packed tensors registered on the module, exact w.r.t. the mask."""
import torch

from sparsefx_testing import MLP, make_context, run_passes
from sparsefx.passes.find_prunable import FindPrunable
from sparsefx.passes.pack_weights import PackWeights
from sparsefx.passes.prune_tiles import PruneTiles
from sparsefx.passes.restore_elements import RestoreElements
from sparsefx.passes.score_importance import ScoreImportance
from sparsefx.patterns.tile import unpack_tensors
from sparsefx.runtime.ops import csr_to_dense

ANALYSIS = [FindPrunable(), ScoreImportance(), PruneTiles(), RestoreElements()]


def test_packs_each_pruned_layer_exactly():
    model = MLP()
    gm, ctx = make_context(model, torch.randn(4, 48), G=16, sparsity=0.7, delta=0.03)
    run_passes(gm, ctx, ANALYSIS)
    result = PackWeights()(gm, ctx)
    assert result.modified
    for info in ctx.prunable_layers():
        packed = gm.get_submodule(info.packed_path)
        n, k = info.matrix_shape
        dense = unpack_tensors(packed.values, packed.row_idx, packed.row_ptr, packed.col_map, n, k)
        dense = dense + csr_to_dense(packed.ew_crow, packed.ew_col, packed.ew_values, n, k)
        weight = getattr(model, info.name).weight
        assert torch.equal(dense, weight * info.mask())
        assert torch.equal(packed.bias, getattr(model, info.name).bias)
    keys = gm.state_dict().keys()
    assert "sparsefx_packed.fc1.values" in keys and "sparsefx_packed.fc1.ew_col" in keys
    # the graph itself is untouched: nothing calls the packed weights yet
    assert "sparsefx_packed" not in gm.code


def test_does_not_pack_unpruned_layers():
    gm, ctx = make_context(MLP(), torch.randn(4, 48), G=16, sparsity=0.0)
    run_passes(gm, ctx, ANALYSIS)
    result = PackWeights()(gm, ctx)
    assert not result.modified
    assert all(i.packed_path is None and i.op == "dense (nothing pruned)"
               for i in ctx.prunable_layers())


def test_second_run_changes_nothing():
    gm, ctx = make_context(MLP(), torch.randn(4, 48), G=16, sparsity=0.5)
    run_passes(gm, ctx, ANALYSIS + [PackWeights()])
    state = {k: v.clone() for k, v in gm.state_dict().items()}
    again = PackWeights()(gm, ctx)
    assert not again.modified
    assert state.keys() == gm.state_dict().keys()
