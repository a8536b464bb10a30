"""torch.export and torch.compile round-trips of a compiled model on CPU, and training
through it (gradients vs the masked dense model of sparsefx.prune)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsefx
from sparsefx_testing import rel_err, small_bert
from sparsefx.patterns.tile import gather_tensors

TOL = 1e-5


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(48, 96), nn.Linear(96, 32)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def sparse_targets(gm):
    return [n.target for n in gm.graph.nodes
            if n.op == "call_function" and getattr(n.target, "namespace", None) == "sparsefx"]


@pytest.fixture(scope="module")
def mlp_pair():
    torch.manual_seed(2)
    model = MLP().eval()
    x = torch.randn(8, 48)
    return model, x, sparsefx.compile(model, x, G=16, sparsity=0.75)


def test_torch_export_keeps_sparse_ops_and_round_trips(mlp_pair, tmp_path):
    _, x, sm = mlp_pair
    program = torch.export.export(sm, (x,), dynamic_shapes={"x": {0: torch.export.Dim("b")}})
    assert sparse_targets(program.graph_module) == sparse_targets(sm)   # opaque, not decomposed
    torch.export.save(program, tmp_path / "mlp.pt2")
    loaded = torch.export.load(tmp_path / "mlp.pt2").module()
    for batch in (8, 5):
        fresh = torch.randn(batch, 48)
        assert rel_err(loaded(fresh), sm(fresh).detach()) <= TOL


def test_torch_export_hf_bert():
    model = small_bert()
    ids = torch.randint(0, 100, (2, 16))
    sm = sparsefx.compile(model, (ids,), G=16, sparsity=0.75)
    program = torch.export.export(sm, (ids,))
    assert len(sparse_targets(program.graph_module)) == len(sparse_targets(sm)) > 0
    fresh = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        assert rel_err(program.module()(fresh)[0], sm(fresh)[0]) <= TOL


def test_no_graph_breaks_on_sparse_ops(mlp_pair):
    _, x, sm = mlp_pair
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(sm)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    (graph,) = explanation.graphs
    assert sparse_targets(graph) == sparse_targets(sm)


def test_torch_compile_inductor_fullgraph(mlp_pair):
    _, _, sm = mlp_pair
    torch._dynamo.reset()
    compiled = torch.compile(sm, fullgraph=True)                # default backend: inductor
    fresh = torch.randn(8, 48)
    with torch.no_grad():
        assert rel_err(compiled(fresh), sm(fresh)) <= TOL


def test_training_through_compiled_module_matches_masked_dense():
    """Gradients of packed values and bias equal the masked dense model's gradients at
    the kept positions (same masks: compile and prune share their analysis)."""
    torch.manual_seed(3)
    model, x = MLP(), torch.randn(16, 48)
    target = torch.randn(16, 32)
    sm = sparsefx.compile(model, x, G=16, sparsity=0.75).train()
    dense = sparsefx.prune(model, x, G=16, sparsity=0.75).train()
    torch._dynamo.reset()
    compiled = torch.compile(sm, backend="aot_eager", fullgraph=True)
    F.mse_loss(compiled(x), target).backward()
    F.mse_loss(dense(x), target).backward()
    checked = 0
    for layer in ("fc1", "fc2"):
        packed = sm.sparsefx_packed.get_submodule(layer)
        if packed is None:
            continue
        dense_layer = getattr(dense, layer)
        assert packed.values.grad is not None and packed.bias.grad is not None
        expected = gather_tensors(dense_layer.weight.grad, packed.row_idx, packed.row_ptr,
                                  packed.col_map, packed.values.shape[1])
        assert rel_err(packed.values.grad, expected) <= 1e-5
        assert rel_err(packed.bias.grad, dense_layer.bias.grad) <= 1e-5
        checked += 1
    assert checked == 2
    # One optimiser step keeps the pattern: only packed values change.
    before = {k: v.clone() for k, v in sm.state_dict().items()}
    torch.optim.SGD(sm.parameters(), lr=0.1).step()
    after = sm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "idx" in k or "ptr" in k
               or "col_map" in k)
    assert not torch.equal(before["sparsefx_packed.fc1.values"], after["sparsefx_packed.fc1.values"])
