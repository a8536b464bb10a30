"""Public API behaviour: defaults, short form, no mutation, state_dict, errors."""
import pytest
import torch
from torch import nn

import sparsefx
from sparsefx_testing import MLP, rel_err, small_bert
from sparsefx.errors import CaptureError, ConfigError


def test_short_form_without_example_inputs():
    model = MLP()
    sm = sparsefx.compile(model, pattern="tile", G=16)
    x = torch.randn(3, 48)
    assert rel_err(sm(x), sparsefx.prune(model, G=16)(x)) <= 1e-5
    assert sm.log.summary["target_sparsity"] == 0.5
    assert sm(torch.randn(7, 48)).shape == (7, 40)        # any batch size


def test_callers_model_is_not_modified():
    model = MLP()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sparsefx.compile(model, torch.randn(2, 48), G=16, sparsity=0.9)
    sparsefx.prune(model, torch.randn(2, 48), G=16, sparsity=0.9)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_state_dict_round_trip():
    model, x = MLP(), torch.randn(4, 48)
    sm = sparsefx.compile(model, x, G=16, sparsity=0.75)
    other = sparsefx.compile(model, x, G=16, sparsity=0.75)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p))
    assert rel_err(other(x), sm(x)) > 1e-3
    other.load_state_dict(sm.state_dict())
    assert torch.equal(other(x), sm(x))
    assert not any(k.endswith("fc1.weight") for k in sm.state_dict())


def test_prune_masks_match_log():
    pm = sparsefx.prune(MLP(), torch.randn(2, 48), G=16, sparsity=0.75)
    for row in pm.log.layers:
        mask = pm.sparsefx_masks[f"{row.name}.weight"]
        assert abs((1 - mask.double().mean().item()) - row.achieved_sparsity) < 1e-12
        assert (getattr(pm, row.name).weight[~mask] == 0).all()


@pytest.mark.parametrize("options, message", [
    (dict(pattern="blocky"), "pattern='blocky'"),
    (dict(sparsity=1.0), "sparsity=1.0"),
    (dict(sparsity=-0.1), "sparsity=-0.1"),
    (dict(G=0), "G=0"),
    (dict(G=2.5), "G=2.5"),
    (dict(importance="random"), "importance='random'"),
    (dict(importance="taylor"), "needs calibration"),
    (dict(delta=0.6, sparsity=0.5), "delta=0.6"),
    (dict(exclude=3), "exclude"),
    (dict(min_density=0.9, max_density=0.5), "min_density"),
])
def test_bad_options_name_the_argument(options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        sparsefx.compile(MLP(), torch.randn(2, 48), **options)


def test_example_inputs_that_do_not_run():
    with pytest.raises(CaptureError, match="example_inputs do not run"):
        sparsefx.compile(MLP(), torch.randn(2, 47), G=16)


def test_untraceable_model_errors_name_the_fix():
    with pytest.raises(CaptureError, match="needs example inputs"):
        sparsefx.compile(small_bert(), G=16)

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            if x.sum().item() > 0:                        # data-dependent Python
                return self.fc(x)
            return torch.tensor([float(v) for v in x.flatten().tolist()])

    with pytest.raises(CaptureError, match="torch.export fallback failed"):
        sparsefx.compile(Untraceable(), torch.randn(2, 8), G=4)


def test_not_a_module():
    with pytest.raises(ConfigError, match="torch.nn.Module"):
        sparsefx.compile(lambda x: x)
