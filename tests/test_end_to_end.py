"""compile vs prune on every model family, sparsity accounting, Taylor vs magnitude."""
import pytest
import torch

import sparsefx
from sparsefx_testing import CNN, MLP, FunctionalLinear, randomize_batchnorm, rel_err, small_bert, small_gpt2


def mlp_case():
    return MLP(), lambda: torch.randn(6, 48)


def cnn_case():
    return randomize_batchnorm(CNN()).eval(), lambda: torch.randn(2, 3, 16, 16)


def functional_case():
    return FunctionalLinear(), lambda: torch.randn(5, 40)


def bert_case():
    return small_bert(), lambda: torch.randint(0, 100, (2, 12))


def gpt2_case():
    return small_gpt2(), lambda: torch.randint(0, 100, (2, 12))


CASES = {"mlp": mlp_case, "cnn": cnn_case, "functional": functional_case, "bert": bert_case,
         "gpt2": gpt2_case}


def first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    return output[0]


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("delta", [0.0, 0.05])
def test_compile_matches_prune(name, delta):
    model, make_input = CASES[name]()
    example = make_input()
    options = dict(pattern="tile", G=16, sparsity=0.75, delta=delta)
    sm = sparsefx.compile(model, example, **options)
    reference = sparsefx.prune(model, example, **options)
    ops = {n.target for n in sm.graph.nodes if n.op == "call_function"}
    assert ops & {torch.ops.sparsefx.tile_linear.default, torch.ops.sparsefx.tew_linear.default,
                  sparsefx.runtime.conv.tile_conv, sparsefx.runtime.conv.tew_conv}
    with torch.no_grad():
        for _ in range(2):                               # fresh inputs, not the example
            x = make_input()
            assert rel_err(first_tensor(sm(x)), first_tensor(reference(x))) <= 1e-5


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9])
def test_achieved_sparsity_within_one_unit(sparsity):
    model, make_input = bert_case()
    sm = sparsefx.compile(model, make_input(), G=16, sparsity=sparsity)
    rows = [r for r in sm.log.layers if r.pattern == "tile"]
    sizes = {r.name: r.weight_shape[0] * r.weight_shape[1] for r in rows}
    total = sum(sizes.values())
    pruned = sum(r.achieved_sparsity * sizes[r.name] for r in rows)
    largest_unit = max(max(r.weight_shape[1], 16) for r in rows)
    assert abs(pruned - sparsity * total) <= largest_unit
    per_layer = [r.achieved_sparsity for r in rows]
    assert max(per_layer) - min(per_layer) > 0.05         # global ranking: uneven layers
    packed_elements = sum(v.numel() for k, v in sm.state_dict().items() if k.endswith(".values"))
    padding = sum(15 * r.weight_shape[1] for r in rows)   # an edge tile pads < G columns
    assert packed_elements <= (1 - sparsity) * total + padding


def test_taylor_and_magnitude_give_different_masks():
    model, make_input = mlp_case()
    calibration = [make_input() for _ in range(4)]
    magnitude = sparsefx.prune(model, calibration[0], G=16, sparsity=0.6)
    taylor = sparsefx.prune(model, calibration[0], G=16, sparsity=0.6, importance="taylor",
                            calibration=calibration)
    differs = [not torch.equal(magnitude.sparsefx_masks[k], taylor.sparsefx_masks[k])
               for k in magnitude.sparsefx_masks]
    assert any(differs)
    sm = sparsefx.compile(model, calibration[0], G=16, sparsity=0.6, importance="taylor",
                          calibration=calibration)
    x = make_input()
    assert rel_err(sm(x), taylor(x)) <= 1e-5


def test_taylor_on_hf_model():
    model, make_input = bert_case()
    calibration = [make_input() for _ in range(2)]
    sm = sparsefx.compile(model, calibration[0], G=16, sparsity=0.5, importance="taylor",
                          calibration=calibration)
    ref = sparsefx.prune(model, calibration[0], G=16, sparsity=0.5, importance="taylor",
                         calibration=calibration)
    x = make_input()
    assert rel_err(sm(x).last_hidden_state, ref(x).last_hidden_state) <= 1e-5
