"""PassManager: verification, timing, named failures, dumps."""
import pytest
import torch
from torch import fx

from sparsefx_testing import MLP, make_context
from sparsefx.errors import PassError
from sparsefx.passes.find_prunable import FindPrunable
from sparsefx.passes.infra import PassManager, PassResult, Record, verify_graph


class BreakGraph:
    """Leaves a node that uses a value defined after it: the verifier must catch it."""
    name = "break_graph"

    def __call__(self, gm, ctx):
        nodes = list(gm.graph.nodes)
        output = nodes[-1]
        with gm.graph.inserting_before(nodes[1]):
            gm.graph.call_function(torch.relu, (output.args[0],))
        return PassResult(gm, True, [])


class Fails:
    name = "fails"

    def __call__(self, gm, ctx):
        raise RuntimeError("boom")


class Counts:
    name = "counts"

    def __call__(self, gm, ctx):
        return PassResult(gm, False, [Record("counted", "fc1", {"n": 1})])


def test_runs_times_and_logs_each_pass():
    gm, ctx = make_context(MLP(), torch.randn(2, 48), G=16)
    gm, log = PassManager([FindPrunable(), Counts()])(gm, ctx)
    assert [p.name for p in log.passes] == ["find_prunable", "counts"]
    assert all(p.time_ms >= 0 for p in log.passes)
    assert log.passes[1].records == [{"action": "counted", "layer": "fc1", "n": 1}]


def test_failure_names_the_pass_and_pipeline():
    gm, ctx = make_context(MLP(), torch.randn(2, 48), G=16)
    with pytest.raises(PassError, match=r"(?s)pass 'fails' failed: boom.*find_prunable"):
        PassManager([FindPrunable(), Fails()])(gm, ctx)


def test_verifier_catches_broken_graph():
    gm, ctx = make_context(MLP(), torch.randn(2, 48), G=16)
    with pytest.raises(PassError, match="break_graph"):
        PassManager([BreakGraph()])(gm, ctx)


def test_verifier_requires_shape_meta_on_sparsefx_ops():
    gm, ctx = make_context(MLP(), torch.randn(2, 48), G=16)
    x = next(iter(gm.graph.nodes))
    with gm.graph.inserting_before(list(gm.graph.nodes)[-1]):
        w = gm.graph.call_function(torch.ones, (8, 8))
        gm.graph.call_function(torch.ops.sparsefx.tile_linear.default,
                               (x, w, w, w, w, None, 8))
    with pytest.raises(AssertionError, match="shape meta missing"):
        verify_graph(gm, ctx)


def test_dumps_graph_after_each_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEFX_DUMP_DIR", str(tmp_path))
    gm, ctx = make_context(MLP(), torch.randn(2, 48), G=16)
    PassManager([FindPrunable(), Counts()])(gm, ctx)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00_find_prunable.txt", "01_counts.txt"]
    assert "fc1" in (tmp_path / "00_find_prunable.txt").read_text()
