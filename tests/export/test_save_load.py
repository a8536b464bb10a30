"""save/load: same outputs on fresh inputs, packed (not dense) tensors in the file, log
kept, no pickle, version checks, clear errors for unsavable graphs and bad paths."""
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import fx, nn

import sparsefx
from sparsefx_testing import CNN, rel_err, randomize_batchnorm, small_bert, small_gpt2
from sparsefx.export import ExportError, export_onnx, load, save


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(48, 96), nn.Linear(96, 32)
        self.drop = nn.Dropout(0.25)

    def forward(self, x):
        return self.fc2(self.drop(F.relu(self.fc1(x))))


def roundtrip(sm, tmp_path):
    path = save(sm, tmp_path / "model.safetensors")
    return load(path), path


def saved_mlp_contents(tmp_path):
    """(metadata, tensors) of a compiled MLP saved to disk: the starting point of the
    tampered-file tests, which edit and re-write them with plain safetensors."""
    sm = sparsefx.compile(MLP(), torch.randn(8, 48), G=16, sparsity=0.5)
    path = save(sm, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def test_mlp_roundtrip_same_outputs_and_log(tmp_path):
    model = MLP().eval()
    sm = sparsefx.compile(model, torch.randn(8, 48), G=16, sparsity=0.75)
    loaded, path = roundtrip(sm, tmp_path)
    assert not loaded.training
    for batch in (8, 3):                             # not tied to the example's shape
        x = torch.randn(batch, 48)
        assert torch.equal(loaded(x), sm(x))
    assert loaded.log.to_json() == sm.log.to_json()
    assert str(loaded.log) == str(sm.log)
    assert loaded.state_dict().keys() == sm.state_dict().keys()
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        assert f.metadata()["format_version"] == "1"
    assert "sparsefx_packed.fc1.values" in keys and "fc1.weight" not in keys


def test_cnn_roundtrip(tmp_path):
    model = randomize_batchnorm(CNN()).eval()
    sm = sparsefx.compile(model, torch.randn(2, 3, 16, 16), G=16, sparsity=0.75)
    loaded, _ = roundtrip(sm, tmp_path)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded(x), sm(x))


@pytest.mark.parametrize("make_model", [small_bert, small_gpt2], ids=["bert", "gpt2"])
def test_hf_roundtrip(make_model, tmp_path):
    model = make_model()
    ids = torch.randint(0, 100, (2, 16))
    sm = sparsefx.compile(model, (ids,), G=16, sparsity=0.75)
    loaded, _ = roundtrip(sm, tmp_path)
    fresh = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        out, ref = loaded(fresh), sm(fresh)
    assert type(out) is type(ref)
    assert rel_err(out[0], ref[0]) == 0.0


def test_loaded_model_trains_and_exports(tmp_path):
    """The loaded module is a normal GraphModule: trainable and exportable to ONNX."""
    sm = sparsefx.compile(MLP(), torch.randn(8, 48), G=16, sparsity=0.75)
    loaded, _ = roundtrip(sm, tmp_path)
    loaded.train()
    x = torch.randn(8, 48)
    loaded(x).square().mean().backward()
    assert loaded.sparsefx_packed.fc1.values.grad is not None
    assert loaded.sparsefx_packed.fc1.values.requires_grad
    loaded.eval()
    export_onnx(loaded, x, tmp_path / "loaded.onnx")


def test_tied_parameters_stay_tied(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(32, 32)
            self.b = nn.Linear(32, 32)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    gm = fx.symbolic_trace(Tied())
    loaded, _ = roundtrip(gm, tmp_path)
    assert loaded.a.weight is loaded.b.weight
    x = torch.randn(4, 32)
    assert torch.equal(loaded(x), gm(x))


def test_refuses_unknown_format_version(tmp_path):
    metadata, tensors = saved_mlp_contents(tmp_path)
    metadata["format_version"] = "999"
    save_file(tensors, str(tmp_path / "future.safetensors"), metadata=metadata)
    with pytest.raises(ExportError, match=r"format version '999'.*reads only version 1"):
        load(tmp_path / "future.safetensors")
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ExportError, match="not written by sparsefx.save"):
        load(tmp_path / "plain.safetensors")
    with pytest.raises(ExportError, match="no file"):
        load(tmp_path / "missing.safetensors")


def user_helper(x):
    return x * 3


fx.wrap("user_helper")   # a leaf for symbolic_trace: the graph calls this test's code


def test_refuses_graph_calling_user_code(tmp_path):
    class CallsUserCode(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(32, 64)

        def forward(self, x):
            return user_helper(self.fc(x))

    gm = fx.symbolic_trace(CallsUserCode())
    with pytest.raises(ExportError, match=r"user_helper.*not part of torch or sparsefx"):
        save(gm, tmp_path / "m.safetensors")


def test_refuses_file_naming_untrusted_code(tmp_path):
    """A tampered file cannot make load() import arbitrary modules."""
    metadata, tensors = saved_mlp_contents(tmp_path)
    spec = json.loads(metadata["module"])
    spec["children"]["drop"]["class"] = "os.system"
    metadata["module"] = json.dumps(spec)
    save_file(tensors, str(tmp_path / "evil.safetensors"), metadata=metadata)
    with pytest.raises(ExportError, match="not part of torch or sparsefx"):
        load(tmp_path / "evil.safetensors")


def test_save_bad_path(tmp_path):
    sm = sparsefx.compile(MLP(), torch.randn(8, 48), G=16, sparsity=0.5)
    with pytest.raises(ExportError, match="does not exist"):
        save(sm, tmp_path / "nope" / "m.safetensors")
    with pytest.raises(ExportError, match="is a directory"):
        save(sm, tmp_path)
