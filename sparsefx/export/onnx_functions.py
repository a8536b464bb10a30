"""ONNX reference bodies of the ``com.sparsefx`` ops, as ``FunctionProto``s.

Why: a ``.onnx`` file with bare ``com.sparsefx::TileLinear`` nodes only runs where a
runtime has a kernel for them. Attaching each op's body as a model-local ONNX function
lets stock onnxruntime (which inlines local functions) run the file with no extra
library, while a runtime that *does* register a ``com.sparsefx`` kernel can still pick
the node up whole.

The bodies compute from the packed tensors only (``values [R, G]``, ``row_idx [R]``,
``row_ptr [T+1]``, ``col_map [N_kept]``, see :mod:`sparsefx.patterns.tile`): every
index they need is derived inside the body (``ScatterElements``+``CumSum`` for the tile
of each packed row, ``Range`` for the column inside a tile), so the file stores nothing
but the packed format. The dense ``W [N, K]`` is rebuilt with one ``ScatterND``
(reduction ``add``: padding of the edge tile is zeroed first and may then land on a real
position without changing it) and the layer is one ``Gemm``, exactly like the PyTorch
reference in :mod:`sparsefx.runtime.ops`. Runtimes constant-fold the unpacking, since it
depends on initializers only.

Attributes (``out_features`` int, ``activation`` string, ``feature_major`` int) are
attribute references inside the body. The activation is chosen by an ``If`` chain on
``Equal(activation, "relu")``…, and string ``Equal`` exists from opset 19 on: that is
why :data:`MIN_OPSET` is 19.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import onnx
from onnx import AttributeProto, FunctionProto, GraphProto, NodeProto, TensorProto, helper

DOMAIN = "com.sparsefx"
DOMAIN_VERSION = 1
#: String ``Equal`` (used to dispatch on ``activation``) needs opset 19.
MIN_OPSET = 19

#: ONNX op type of each ``torch.ops.sparsefx`` op.
OP_TYPES = {"tile_linear": "TileLinear", "tew_linear": "TewLinear",
            "bias_residual_layernorm": "BiasResidualLayerNorm"}
#: Formal inputs of each function; ``bias`` is optional (an empty name when absent).
INPUTS = {
    "TileLinear": ["x", "values", "row_idx", "row_ptr", "col_map", "bias"],
    "TewLinear": ["x", "values", "row_idx", "row_ptr", "col_map", "ew_crow", "ew_col",
                  "ew_values", "bias"],
    # all five are required here: the exporter passes zeros/ones for absent vectors
    "BiasResidualLayerNorm": ["x", "residual", "bias", "weight", "ln_bias"],
}
ATTRIBUTES = ("out_features", "activation", "feature_major")
#: Attributes of each function (name → "int" / "string" / "float").
FUNCTION_ATTRIBUTES = {
    "TileLinear": {"out_features": "int", "activation": "string", "feature_major": "int"},
    "TewLinear": {"out_features": "int", "activation": "string", "feature_major": "int"},
    "BiasResidualLayerNorm": {"eps": "float", "feature_major": "int"},
}

Value = str  # a value name inside the body


class _Body:
    """Collects the nodes of one graph or function body with unique value names."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list[NodeProto] = []
        self._count = 0

    def fresh(self, hint: str) -> Value:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def op(self, op_type: str, *inputs: Optional[Value], outputs: Sequence[Value] = (),
           attrs: Sequence[AttributeProto] = (), **kwargs) -> Value:
        """Append one node; ``None`` inputs become empty (absent optional) inputs."""
        out = list(outputs) or [self.fresh(op_type.lower())]
        node = helper.make_node(op_type, ["" if i is None else i for i in inputs], out,
                                name=self.fresh("n_" + op_type), **kwargs)
        node.attribute.extend(attrs)
        self.nodes.append(node)
        return out[0]

    def const(self, value, dtype=TensorProto.INT64, dims: Optional[Sequence[int]] = None
              ) -> Value:
        values = value if isinstance(value, (list, tuple)) else [value]
        dims = [len(values)] if dims is None else list(dims)
        return self.op("Constant", value=helper.make_tensor(self.fresh("c"), dtype, dims,
                                                            values))

    def attr_const(self, attr: str, kind: str) -> Value:
        """A ``Constant`` whose value is the function attribute ``attr`` (a reference)."""
        ref = AttributeProto(name=kind, ref_attr_name=attr,
                             type=AttributeProto.INT if kind == "value_int"
                             else AttributeProto.STRING)
        return self.op("Constant", attrs=[ref])


def _attr_ref(name: str, ref: str, kind: int) -> AttributeProto:
    return AttributeProto(name=name, ref_attr_name=ref, type=kind)


# ------------------------------------------------------------------ packed format → W
def _segment_of(b: _Body, ptr: Value, length: Value) -> Value:
    """For each position ``p < length`` the segment ``s`` with ``ptr[s] <= p < ptr[s+1]``.

    Marks the start of every segment after the first (``ScatterElements`` with reduction
    ``add``, so empty segments stack up at the same position) and takes a running sum.
    Needs ``ptr[0] == 0`` and ``ptr[-1] == length``, which the packed format guarantees.
    """
    ptr = b.op("Cast", ptr, to=TensorProto.INT64)
    inner = b.op("Slice", ptr, b.const(1), b.const(-1))        # ptr[1:-1]
    one = b.const(1)
    zeros = b.op("ConstantOfShape", b.op("Add", length, one),
                 value=helper.make_tensor("zero", TensorProto.INT64, [1], [0]))
    ones = b.op("Expand", one, b.op("Shape", inner))
    marks = b.op("ScatterElements", zeros, inner, ones, axis=0, reduction="add")
    running = b.op("CumSum", marks, b.const(0, dims=[]))
    return b.op("Slice", running, b.const(0), length)


def _dense_from_tiles(b: _Body, values: Value, row_idx: Value, row_ptr: Value,
                      col_map: Value, out_shape: Value) -> Value:
    """The dense ``W [N, K]`` of the TW packed tensors (zeros where pruned)."""
    rows = b.op("Shape", values, start=0, end=1)                # [1] R
    width = b.op("Shape", values, start=1, end=2)               # [1] G
    n_kept = b.op("Shape", col_map)                             # [1] N_kept
    tile_of_row = _segment_of(b, row_ptr, rows)                 # [R]
    lane = b.op("Range", b.const(0, dims=[]), b.op("Squeeze", width, b.const(0)),
                b.const(1, dims=[]))                            # [G]
    out_pos = b.op("Add", b.op("Mul", b.op("Unsqueeze", tile_of_row, b.const(1)), width),
                   b.op("Unsqueeze", lane, b.const(0)))         # [R, G]
    valid = b.op("Less", out_pos, n_kept)                       # edge-tile padding: False
    last = b.op("Max", b.op("Sub", n_kept, b.const(1)), b.const(0))
    out_idx = b.op("Gather", b.op("Cast", col_map, to=TensorProto.INT64),
                   b.op("Min", out_pos, last))                  # [R, G]
    in_idx = b.op("Expand", b.op("Unsqueeze", b.op("Cast", row_idx, to=TensorProto.INT64),
                                 b.const(1)), b.op("Shape", values))
    index = b.op("Concat", b.op("Unsqueeze", out_idx, b.const(-1)),
                 b.op("Unsqueeze", in_idx, b.const(-1)), axis=-1)          # [R, G, 2]
    zero = _zero_of(b, values)
    updates = b.op("Where", valid, values, zero)
    return b.op("ScatterND", b.op("Expand", zero, out_shape), index, updates,
                reduction="add")


def _add_csr(b: _Body, dense: Value, crow: Value, col: Value, ew_values: Value) -> Value:
    """``dense + CSR(crow, col, ew_values)`` (the TEW restored elements)."""
    nnz = b.op("Shape", ew_values)
    row_of = _segment_of(b, crow, nnz)                          # [nnz]
    index = b.op("Concat", b.op("Unsqueeze", row_of, b.const(-1)),
                 b.op("Unsqueeze", b.op("Cast", col, to=TensorProto.INT64), b.const(-1)),
                 axis=-1)                                       # [nnz, 2]
    return b.op("ScatterND", dense, index, b.op("CastLike", ew_values, dense),
                reduction="add")


def _zero_of(b: _Body, like: Value) -> Value:
    """A scalar 0 of ``like``'s element type: the sum of an empty slice of it.

    Not ``CastLike(0.0, like)``: onnxruntime cannot constant-fold ``CastLike`` (it has
    no CPU kernel, only a function expansion), and a value that cannot be folded would
    make it unpack the weights again on every run instead of once at load time.
    """
    empty = b.op("Slice", like, b.const(0), b.const(0), b.const(0))
    return b.op("ReduceSum", empty, keepdims=0)


# ------------------------------------------------------------------ W → linear layer
def _linear(b: _Body, x: Value, weight_of, bias: Optional[Value], output: Value) -> None:
    """``activation(x @ W.T + bias)`` in either layout, ``W`` built by ``weight_of``.

    Both layouts are one ``Gemm`` giving ``[M, N]``: row-major flattens ``x [..., K]`` to
    ``[M, K]``; feature-major reads ``x [K, M]`` with ``transA=1``. ``bias`` goes in as
    Gemm's optional ``C``, so an absent bias needs no special case.
    """
    fm_int = b.attr_const("feature_major", "value_int")
    fm = b.op("Cast", fm_int, to=TensorProto.BOOL)
    x_shape = b.op("Shape", x)
    k_axis = b.op("Reshape", b.op("Sub", fm_int, b.const(1, dims=[])), b.const(1))
    in_features = b.op("Gather", x_shape, k_axis)               # [1]: dim 0 or dim -1
    out_features = b.op("Reshape", b.attr_const("out_features", "value_int"), b.const(1))
    weight = weight_of(b.op("Concat", out_features, in_features, axis=0))
    minus_one = b.const(-1)
    x2_shape = b.op("Where", fm, b.op("Concat", in_features, minus_one, axis=0),
                    b.op("Concat", minus_one, in_features, axis=0))
    x2 = b.op("Reshape", x, x2_shape)
    y2 = b.op("Gemm", x2, b.op("CastLike", weight, x), bias, transB=1,
              attrs=[_attr_ref("transA", "feature_major", AttributeProto.INT)])  # [M, N]
    lead = b.op("Slice", x_shape, b.const(0), b.const(-1))
    y = b.op("If", fm,
             then_branch=_branch(b, "fm", lambda s: s.op("Transpose", y2, perm=[1, 0])),
             else_branch=_branch(b, "rm", lambda s: s.op(
                 "Reshape", y2, s.op("Concat", lead, out_features, axis=0))))
    _activation(b, y, output)


def _branch(parent: _Body, name: str, build) -> GraphProto:
    """A subgraph for ``If`` whose single output is what ``build(body)`` returns."""
    sub = _Body(f"{parent.prefix}{name}_{len(parent.nodes)}_")
    out = build(sub)
    return helper.make_graph(sub.nodes, parent.fresh(name), [],
                             [helper.make_value_info(out, onnx.TypeProto())])


def _activation(b: _Body, y: Value, output: Value) -> None:
    """``output = activation(y)``, choosing by the ``activation`` string attribute."""
    name = b.attr_const("activation", "value_string")

    def gelu(s: _Body) -> Value:    # exact (erf) GELU, as torch.nn.functional.gelu
        half = s.op("CastLike", s.const(0.5, TensorProto.FLOAT, dims=[]), y)
        inv_sqrt2 = s.op("CastLike", s.const(0.7071067811865476, TensorProto.FLOAT,
                                             dims=[]), y)
        one = s.op("CastLike", s.const(1.0, TensorProto.FLOAT, dims=[]), y)
        erf = s.op("Erf", s.op("Mul", y, inv_sqrt2))
        return s.op("Mul", s.op("Mul", half, y), s.op("Add", one, erf))

    chain = [("relu", lambda s: s.op("Relu", y)), ("gelu", gelu),
             ("silu", lambda s: s.op("Mul", y, s.op("Sigmoid", y)))]
    # Build from the innermost else outwards: relu ? .. : gelu ? .. : silu ? .. : y
    def nested(i: int, s: _Body) -> Value:
        if i == len(chain):
            return s.op("Identity", y)
        act, build = chain[i]
        return s.op("If", _is_in(s, name, act),
                    then_branch=_branch(s, act, build),
                    else_branch=_branch(s, "not_" + act, lambda t: nested(i + 1, t)))
    result = nested(0, b)
    b.op("Identity", result, outputs=[output])


def _is_in(s: _Body, name: Value, act: str) -> Value:
    return s.op("Equal", name, s.const(act.encode(), TensorProto.STRING, dims=[]))


# ------------------------------------------------------------------ the functions
def tile_linear_function(opset: int) -> FunctionProto:
    """``com.sparsefx::TileLinear``: ``activation(x @ W.T + bias)``, W from the TW format."""
    b = _Body("")
    _linear(b, "x", lambda shape: _dense_from_tiles(b, "values", "row_idx", "row_ptr",
                                                    "col_map", shape), "bias", "y")
    return _function("TileLinear", b, opset,
                     "Tile-wise sparse linear layer; see sparsefx.patterns.tile.")


def tew_linear_function(opset: int) -> FunctionProto:
    """``com.sparsefx::TewLinear``: TileLinear's W plus the CSR restored elements."""
    b = _Body("")

    def weight(shape: Value) -> Value:
        dense = _dense_from_tiles(b, "values", "row_idx", "row_ptr", "col_map", shape)
        return _add_csr(b, dense, "ew_crow", "ew_col", "ew_values")
    _linear(b, "x", weight, "bias", "y")
    return _function("TewLinear", b, opset,
                     "Tile-element-wise sparse linear layer (TW part + CSR elements).")


def bias_residual_layernorm_function(opset: int) -> FunctionProto:
    """``com.sparsefx::BiasResidualLayerNorm``: ``LayerNorm((x + bias) + residual)`` over
    the feature axis (axis 0 when ``feature_major``, else the last axis).

    Feature-major inputs are transposed to ``[M, N]`` and back, so one
    ``LayerNormalization`` (opset 17) over the last axis serves both layouts.
    """
    b = _Body("")
    fm = b.op("Cast", b.attr_const("feature_major", "value_int"), to=TensorProto.BOOL)

    def to_rows(value: Value, label: str) -> Value:
        return b.op("If", fm,
                    then_branch=_branch(b, label + "_t", lambda s: s.op("Transpose", value,
                                                                        perm=[1, 0])),
                    else_branch=_branch(b, label + "_id", lambda s: s.op("Identity", value)))
    h = b.op("Add", b.op("Add", to_rows("x", "x"), "bias"), to_rows("residual", "res"))
    eps = AttributeProto(name="epsilon", ref_attr_name="eps", type=AttributeProto.FLOAT)
    normed = b.op("LayerNormalization", h, "weight", "ln_bias", axis=-1, attrs=[eps])
    out = to_rows(normed, "out")
    b.op("Identity", out, outputs=["y"])
    return _function("BiasResidualLayerNorm", b, opset,
                     "LayerNorm(x + bias + residual); see sparsefx.runtime.norm_ops.")


def _function(op_type: str, body: _Body, opset: int, doc: str) -> FunctionProto:
    return helper.make_function(
        DOMAIN, op_type, INPUTS[op_type], ["y"], body.nodes,
        [helper.make_opsetid("", opset)], attributes=list(FUNCTION_ATTRIBUTES[op_type]),
        doc_string=doc)


FUNCTION_BUILDERS = {"TileLinear": tile_linear_function, "TewLinear": tew_linear_function,
                     "BiasResidualLayerNorm": bias_residual_layernorm_function}


def functions_for(op_types: Union[set, list], opset: int) -> list[FunctionProto]:
    """The FunctionProtos of the given op types (sorted, for a deterministic file)."""
    return [FUNCTION_BUILDERS[t](opset) for t in sorted(op_types)]
