"""export_onnx: custom-domain nodes + attached functions, run in stock onnxruntime (CPU),
compared with eager PyTorch on fresh random inputs; standard-ops variant; file size;
error cases. The ONNX bodies are also checked op by op against torch.ops.sparsefx."""
import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

import sparsefx
from sparsefx_testing import CNN, rel_err, randomize_batchnorm, small_bert, small_gpt2
from sparsefx.export import ExportError, export_onnx
from sparsefx.export.onnx import _inline_functions
from sparsefx.export.onnx_functions import DOMAIN, INPUTS, MIN_OPSET, functions_for
from sparsefx.patterns.tile import TileLayout, pack
from sparsefx.runtime.packed import dense_to_csr

ort = pytest.importorskip("onnxruntime")
TOL = 1e-4


def ort_run(path_or_model, feeds):
    """Run with stock onnxruntime on CPU; ``feeds`` is a list in input order."""
    if isinstance(path_or_model, onnx.ModelProto):
        path_or_model = path_or_model.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path_or_model, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: f.numpy() for n, f in zip(names, feeds)})


def sparsefx_nodes(model: onnx.ModelProto):
    return [n for n in model.graph.node if n.domain == DOMAIN]


def assert_custom_file(path, op_types=("TileLinear",)):
    """The file on disk has com.sparsefx nodes, their functions and the domain import."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert {n.op_type for n in sparsefx_nodes(model)} >= set(op_types)
    assert {(f.domain, f.name) for f in model.functions} >= {(DOMAIN, t) for t in op_types}
    assert {(o.domain, o.version) for o in model.opset_import} >= {(DOMAIN, 1)}
    return model


def count_sparse_ops(sm):
    return sum(1 for n in sm.graph.nodes if n.op == "call_function"
               and getattr(n.target, "namespace", None) == "sparsefx")


def assert_standard_file(path):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert not sparsefx_nodes(model) and not model.functions
    assert all(o.domain != DOMAIN for o in model.opset_import)
    return model


# ------------------------------------------------------------------ op-level bodies
def random_packed(n=45, k=30, G=8, seed=0):
    """A packed layer with an empty tile, an edge tile and pruned output features."""
    gen = torch.Generator().manual_seed(seed)
    kept_cols = torch.nonzero(torch.rand(n, generator=gen) < 0.8).flatten()
    tiles = -(-kept_cols.numel() // G)
    tile_keep = torch.rand(tiles, k, generator=gen) < 0.4
    tile_keep[1] = False
    layout = TileLayout(n, k, G, kept_cols, tile_keep)
    weight = torch.randn(n, k, generator=gen)
    return pack(weight, layout), layout


def single_node_model(op_type, inputs, out_features, activation, feature_major, out_shape):
    """A model whose only node is one com.sparsefx op, all tensors as graph inputs."""
    names = [name if tensor is not None else "" for name, tensor in zip(INPUTS[op_type],
                                                                          inputs)]
    node = helper.make_node(op_type, names, ["y"], domain=DOMAIN, out_features=out_features,
                            activation=activation, feature_major=int(feature_major))
    graph_inputs = [helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(t.numpy().dtype), list(t.shape))
        for name, t in zip(INPUTS[op_type], inputs) if t is not None]
    graph = helper.make_graph([node], "g", graph_inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", MIN_OPSET),
                                                    helper.make_opsetid(DOMAIN, 1)],
                               ir_version=10)
    model.functions.extend(functions_for({op_type}, MIN_OPSET))
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("activation", ["none", "relu", "gelu", "silu"])
@pytest.mark.parametrize("feature_major", [False, True])
@pytest.mark.parametrize("tew", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
def test_function_body_matches_torch_op(activation, feature_major, tew, with_bias):
    packed, layout = random_packed(seed=len(activation) * 7 + 3 * feature_major + tew)
    n, k = layout.out_features, layout.in_features
    x = torch.randn(k, 7) if feature_major else torch.randn(2, 5, k)
    bias = torch.randn(n) if with_bias else None
    tile = [packed.values, packed.row_idx, packed.row_ptr, packed.col_map]
    if tew:
        restore = (torch.rand(n, k) < 0.05) & ~layout.mask()
        restore[0, 0] = True                        # an output feature col_map lacks
        ew = list(dense_to_csr(torch.randn(n, k), restore))
        ref = torch.ops.sparsefx.tew_linear(x, *tile, *ew, bias, n, activation,
                                            feature_major)
        inputs, op_type = [x, *tile, *ew, bias], "TewLinear"
    else:
        ref = torch.ops.sparsefx.tile_linear(x, *tile, bias, n, activation, feature_major)
        inputs, op_type = [x, *tile, bias], "TileLinear"
    model = single_node_model(op_type, inputs, n, activation, feature_major, list(ref.shape))
    feeds = [t for t in inputs if t is not None]
    (out,) = ort_run(model, feeds)
    assert out.shape == tuple(ref.shape)
    assert rel_err(torch.from_numpy(out), ref) <= 1e-5
    (inlined,) = ort_run(_inline_functions(model), feeds)
    assert rel_err(torch.from_numpy(inlined), ref) <= 1e-5


def test_function_body_all_tiles_empty():
    """R == 0: every kept output feature has no kept input; the result is the bias."""
    layout = TileLayout(20, 12, 8, torch.arange(0, 20, 2), torch.zeros(2, 12, dtype=torch.bool))
    packed = pack(torch.randn(20, 12), layout)
    x, bias = torch.randn(3, 12), torch.randn(20)
    inputs = [x, packed.values, packed.row_idx, packed.row_ptr, packed.col_map, bias]
    (out,) = ort_run(single_node_model("TileLinear", inputs, 20, "relu", False, [3, 20]), inputs)
    np.testing.assert_allclose(out, torch.relu(bias).expand(3, 20).numpy(), rtol=0, atol=0)


# ------------------------------------------------------------------ whole models
class MLP(nn.Module):
    def __init__(self, d=64, hidden=256):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(d, hidden), nn.Linear(hidden, hidden), \
            nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.fc3(F.gelu(self.fc2(F.relu(self.fc1(x)))))


@pytest.fixture(scope="module")
def mlp_pair():
    torch.manual_seed(1)
    model = MLP().eval()
    sm = sparsefx.compile(model, torch.randn(8, 64), G=16, sparsity=0.75)
    return model, sm


def test_mlp_custom_ops_runs_in_ort(mlp_pair, tmp_path):
    _, sm = mlp_pair
    path = tmp_path / "mlp.onnx"
    export_onnx(sm, torch.randn(8, 64), path)
    model = assert_custom_file(path)
    assert len(sparsefx_nodes(model)) == count_sparse_ops(sm) >= 2
    packed = {name for name, _ in sm.named_buffers()} | {n for n, _ in sm.named_parameters()}
    inits = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    assert packed <= inits.keys()
    assert all(size <= 16 for name, size in inits.items() if name not in packed)  # no dense W
    x = torch.randn(8, 64)                          # fresh input, not the export example
    (out,) = ort_run(path, [x])
    assert rel_err(torch.from_numpy(out), sm(x).detach()) <= TOL


def test_mlp_standard_ops_runs_in_ort(mlp_pair, tmp_path):
    _, sm = mlp_pair
    path = tmp_path / "mlp_std.onnx"
    export_onnx(sm, torch.randn(8, 64), path, custom_ops=False, opset=MIN_OPSET)
    assert_standard_file(path)
    x = torch.randn(8, 64)
    (out,) = ort_run(path, [x])
    assert rel_err(torch.from_numpy(out), sm(x).detach()) <= TOL


def test_sparse_file_smaller_than_dense(mlp_pair, tmp_path):
    model, sm = mlp_pair
    assert sm.log.summary["achieved_sparsity"] >= 0.74
    sparse, dense = tmp_path / "sparse.onnx", tmp_path / "dense.onnx"
    export_onnx(sm, torch.randn(8, 64), sparse)
    torch.onnx.export(model, (torch.randn(8, 64),), str(dense), dynamo=True, verbose=False,
                      external_data=False)              # weights inside, like ours
    sparse_size, dense_size = sparse.stat().st_size, dense.stat().st_size
    assert sparse_size < 0.6 * dense_size, (sparse_size, dense_size)


def test_dynamic_batch(mlp_pair, tmp_path):
    _, sm = mlp_pair
    path = tmp_path / "dyn.onnx"
    export_onnx(sm, torch.randn(8, 64), path,
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=2, max=1024)}})
    for batch in (3, 37):
        x = torch.randn(batch, 64)
        (out,) = ort_run(path, [x])
        assert rel_err(torch.from_numpy(out), sm(x).detach()) <= TOL


def test_cnn_conv_bn_relu(tmp_path):
    model = randomize_batchnorm(CNN()).eval()
    sm = sparsefx.compile(model, torch.randn(2, 3, 16, 16), G=16, sparsity=0.75)
    for custom in (True, False):
        path = tmp_path / f"cnn_{custom}.onnx"
        export_onnx(sm, torch.randn(2, 3, 16, 16), path, custom_ops=custom)
        (assert_custom_file if custom else assert_standard_file)(path)
        x = torch.randn(2, 3, 16, 16)
        (out,) = ort_run(path, [x])
        assert rel_err(torch.from_numpy(out), sm(x).detach()) <= TOL


@pytest.mark.parametrize("make_model", [small_bert, small_gpt2], ids=["bert", "gpt2"])
def test_hf_model(make_model, tmp_path):
    model = make_model()
    ids = torch.randint(0, 100, (2, 16))
    # feature-major: the file then also holds the layout conversions and the fused
    # bias+residual+LayerNorm node, so their translations are checked too
    sm = sparsefx.compile(model, (ids,), G=16, sparsity=0.75, layout="feature_major")
    path = tmp_path / "hf.onnx"
    export_onnx(sm, (ids,), path)
    onnx_model = assert_custom_file(path)
    assert len(sparsefx_nodes(onnx_model)) >= 8       # 2 layers x (qkv/attn-out/mlp)
    fresh = torch.randint(0, 100, (2, 16))
    outs = ort_run(path, [fresh])
    with torch.no_grad():
        ref = sm(fresh)[0]
    assert rel_err(torch.from_numpy(outs[0]), ref) <= TOL


# ------------------------------------------------------------------ errors
def test_error_unwritable_path(mlp_pair, tmp_path):
    _, sm = mlp_pair
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(sm, torch.randn(8, 64), tmp_path / "missing" / "m.onnx")
    with pytest.raises(ExportError, match="is a directory"):
        export_onnx(sm, torch.randn(8, 64), tmp_path)


def test_error_opset_too_old(mlp_pair, tmp_path):
    _, sm = mlp_pair
    with pytest.raises(ExportError, match=r"opset 17 is too old.*>= 19"):
        export_onnx(sm, torch.randn(8, 64), tmp_path / "m.onnx", opset=17)
    assert not (tmp_path / "m.onnx").exists()


@torch.library.custom_op("sparsefx::_test_untranslatable", mutates_args=())
def _untranslatable(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_untranslatable.register_fake
def _(x):
    return torch.empty_like(x)


def test_error_op_without_translation(tmp_path):
    class UsesUnknownOp(nn.Module):
        def forward(self, x):
            return torch.ops.sparsefx._test_untranslatable(x) + 1

    with pytest.raises(ExportError, match=r"sparsefx::_test_untranslatable.*no ONNX "
                                          r"translation"):
        export_onnx(UsesUnknownOp(), torch.randn(3), tmp_path / "m.onnx")


def test_error_dynamic_shapes_not_expressible(tmp_path):
    class FixedBatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(32, 64)

        def forward(self, x):
            return self.fc(x).reshape(4, 2, 64)      # only works for batch 8

    sm = sparsefx.compile(FixedBatch(), torch.randn(8, 32), G=16, sparsity=0.5)
    with pytest.raises(ExportError, match="dynamic_shapes"):
        export_onnx(sm, torch.randn(8, 32), tmp_path / "m.onnx",
                    dynamic_shapes={"x": {0: torch.export.Dim("batch")}})


@pytest.mark.parametrize("feature_major", [False, True])
@pytest.mark.parametrize("with_vectors", [True, False])
def test_bias_residual_layernorm_op(feature_major, with_vectors, tmp_path):
    """The fused LayerNorm op (absent bias/weight/ln_bias become neutral constants)."""
    if not hasattr(torch.ops.sparsefx, "bias_residual_layernorm"):
        pytest.skip("sparsefx::bias_residual_layernorm is not in this build")

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            vec = (lambda: nn.Parameter(torch.randn(32))) if with_vectors else (lambda: None)
            self.bias, self.weight, self.ln_bias = vec(), vec(), vec()

        def forward(self, x, residual):
            return torch.ops.sparsefx.bias_residual_layernorm(
                x, residual, self.bias, self.weight, self.ln_bias, 1e-5, feature_major)

    shape = (32, 10) if feature_major else (2, 5, 32)
    block = Block()
    path = tmp_path / "ln.onnx"
    export_onnx(block, (torch.randn(shape), torch.randn(shape)), path)
    assert_custom_file(path, ("BiasResidualLayerNorm",))
    x, residual = torch.randn(shape), torch.randn(shape)
    (out,) = ort_run(path, [x, residual])
    assert rel_err(torch.from_numpy(out), block(x, residual).detach()) <= TOL
