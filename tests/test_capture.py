"""Capture: symbolic_trace first, torch.export fallback, shapes in node meta."""
import pytest
import torch

from sparsefx_testing import MLP, small_bert
from sparsefx.capture import capture, normalize_inputs
from sparsefx.errors import CaptureError


def test_symbolic_trace_with_shapes():
    captured = capture(MLP(), (torch.randn(3, 48),), {})
    assert captured.frontend == "symbolic_trace" and captured.fallback_reason is None
    fc2 = next(n for n in captured.gm.graph.nodes if n.target == "fc2")
    assert fc2.meta["tensor_meta"].shape == (3, 96)


def test_no_inputs_no_shapes():
    captured = capture(MLP(), None, None)
    assert all("tensor_meta" not in n.meta for n in captured.gm.graph.nodes)


def test_export_fallback_records_reason():
    captured = capture(small_bert(), (torch.randint(0, 100, (2, 8)),), {})
    assert captured.frontend == "torch.export"
    assert "symbolic_trace failed" in captured.fallback_reason


def test_untraceable_without_inputs_says_what_to_do():
    with pytest.raises(CaptureError, match="needs example inputs"):
        capture(small_bert(), None, None)


def test_normalize_inputs_forms():
    x = torch.randn(2)
    assert normalize_inputs(x) == ((x,), {})
    assert normalize_inputs((x, x))[0] == (x, x)
    assert normalize_inputs({"a": x}) == ((), {"a": x})
    assert normalize_inputs(None) == (None, None)
