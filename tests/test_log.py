"""The pass log: printable table and JSON with the same content."""
import json

import torch

import sparsefx
from sparsefx_testing import MLP


def test_log_table_and_json():
    model = MLP()
    sm = sparsefx.compile(model, torch.randn(4, 48), G=16, sparsity=0.75)
    text = str(sm.log)
    assert "capture: symbolic_trace" in text
    for column in ("pass", "ms", "layer", "weight", "pattern", "target", "achieved", "op"):
        assert column in text
    for name in ("fc1", "fc2", "fc3", "prune_tiles", "tile_linear"):
        assert name in text
    data = json.loads(sm.log.to_json())
    assert {"passes", "layers"} <= data.keys()
    names = [p["name"] for p in data["passes"]]
    assert names[:4] == ["fold_batchnorm", "find_prunable", "score_importance", "prune_tiles"]
    row = next(r for r in data["layers"] if r["name"] == "fc2")
    assert row["weight_shape"] == [96, 96] and row["pattern"] == "tile"
    assert row["target_sparsity"] == 0.75 and 0 < row["achieved_sparsity"] < 1
    assert row["op"] == "tile_linear"
    assert abs(data["summary"]["achieved_sparsity"] - 0.75) < 16 / (96 * 48 + 96 * 96 + 40 * 96)


def test_log_reports_skips_with_reason():
    sm = sparsefx.compile(MLP(), torch.randn(4, 48), G=64, sparsity=0.5)
    row = sm.log.layer("fc3")
    assert row.op == "unchanged" and "< G=64" in row.note
    assert "< G=64" in str(sm.log)
