"""score_importance: magnitude and Taylor scores in matrix view."""
import pytest
import torch
import torch.nn.functional as F

from sparsefx_testing import MLP, make_context, run_passes, small_gpt2
from sparsefx.errors import ConfigError
from sparsefx.passes.find_prunable import FindPrunable
from sparsefx.passes.score_importance import ScoreImportance, half_mean_square


def test_magnitude_is_abs_weight():
    model = MLP()
    gm, ctx = make_context(model, torch.randn(4, 48), G=16)
    graph_before = str(gm.graph)
    run_passes(gm, ctx, [FindPrunable(), ScoreImportance()])
    assert torch.equal(ctx.layers["fc2"].importance, model.fc2.weight.detach().abs())
    assert str(gm.graph) == graph_before


def test_taylor_matches_hand_computed_gradients():
    model = MLP()
    batches = [torch.randn(6, 48) for _ in range(3)]
    gm, ctx = make_context(model, batches[0], G=16, importance="taylor", calibration=batches)
    run_passes(gm, ctx, [FindPrunable(), ScoreImportance()])
    expected = torch.zeros_like(model.fc1.weight)
    for batch in batches:
        model.zero_grad()
        (0.5 * model(batch).pow(2).mean()).backward()
        expected += (model.fc1.weight.grad * model.fc1.weight).pow(2)
    assert torch.allclose(ctx.layers["fc1"].importance, expected.detach(), rtol=1e-5)
    assert model.fc1.weight.grad is not None  # the loop above; sparsefx used its own copy


def test_taylor_with_loss_fn_and_labels():
    model = MLP()
    batches = [(torch.randn(6, 48),) for _ in range(2)]
    labels = torch.randint(0, 40, (6,))
    loss_fn = lambda out, batch: F.cross_entropy(out, labels)
    gm, ctx = make_context(model, batches[0], G=16, importance="taylor", calibration=batches,
                           loss_fn=loss_fn)
    run_passes(gm, ctx, [FindPrunable(), ScoreImportance()])
    assert ctx.layers["fc3"].importance.sum() > 0


def test_taylor_addmm_scores_are_transposed():
    model = small_gpt2()
    ids = torch.randint(0, 100, (2, 8))
    gm, ctx = make_context(model, ids, G=16, importance="taylor", calibration=[ids])
    run_passes(gm, ctx, [FindPrunable(), ScoreImportance()])
    assert ctx.layers["h.0.mlp.c_fc"].importance.shape == (256, 64)


def test_label_free_loss_has_nonzero_gradient():
    w = torch.randn(4, 4, requires_grad=True)
    half_mean_square(torch.randn(3, 4) @ w).backward()
    assert w.grad.abs().sum() > 0


def test_no_prunable_layers_does_not_fire():
    gm, ctx = make_context(MLP(), torch.randn(4, 48), G=1024)
    _, (found, scored) = run_passes(gm, ctx, [FindPrunable(), ScoreImportance()])
    assert not scored.modified and not scored.records


def test_second_run_changes_nothing():
    gm, ctx = make_context(MLP(), torch.randn(4, 48), G=16)
    run_passes(gm, ctx, [FindPrunable(), ScoreImportance()])
    before = ctx.layers["fc1"].importance
    again = ScoreImportance()(gm, ctx)
    assert not again.modified and not again.records
    assert ctx.layers["fc1"].importance is before


def test_empty_calibration_is_an_error():
    gm, ctx = make_context(MLP(), torch.randn(4, 48), G=16, importance="taylor", calibration=[])
    FindPrunable()(gm, ctx)
    with pytest.raises(ConfigError, match="no batches"):
        ScoreImportance()(gm, ctx)
