"""propagate_layout: keep activations feature-major through chains of sparse layers.

Why: the tile GEMM gathers the kept input features of each tile; feature-major
activations ``[F, T]`` make that gather contiguous (5–10× faster on an H200, see
DESIGN.md "Layout and transposes"; paper 002 §VI "Memory Accesses Coalesce"). Switching
every sparse op to feature-major naively costs two transposes per layer; keeping whole
chains feature-major (the ops between sparse layers accept the layout) leaves
transposes only at chain boundaries (attention's batched matmuls, graph inputs/outputs).

How (a minimum cut, so the choice is optimal for the cost model, not greedy):

* every value node is **forced feature-major** (sparse linear ops that are row-major
  now), **flexible** (layout-agnostic: elementwise ops with scalars or same-shape
  operands, inference dropout, ``bias_residual_layernorm``, and — in static
  ``torch.export`` graphs — reshapes that keep the last axis), or **forced row-major**
  (everything else: attention, softmax, convs, LayerNorm not fused, inputs, outputs);
* a conversion of value ``p`` costs ``numel(p)`` (one transpose copy); one conversion per
  value and direction serves all its consumers. Auxiliary nodes "``p`` is available
  feature-major / row-major" make that sharing exact in an s-t cut
  (source = feature-major);
* ``networkx.minimum_cut`` picks the layouts; ties go to row-major (the source side is
  the smallest set reachable from the source).

Rewrite: feature-major ops get ``feature_major=True``; their row-major inputs go through
one :func:`~sparsefx.runtime.layout.to_feature_major` per value; row-major consumers of
feature-major values through one :func:`~sparsefx.runtime.layout.from_feature_major`
per value (token dims from a row-major ancestor with the same tokens when one exists,
so the batch size stays free, else from the static shape); feature-major reshapes
vanish (identity on ``[F, T]``). Adjacent ``to_feature_major(from_feature_major(y))``
pairs collapse to ``y``.

Runs only with ``compile(..., layout="feature_major")``; the default ``"row_major"``
leaves the graph alone (see the ``layout`` argument of :func:`sparsefx.compile`).

Absorbed conversions (after the cut): a ``from_feature_major`` right after a
feature-major sparse op becomes that op reading its input through a transposed view and
writing row-major itself (attention's Q/K/V projections); a ``to_feature_major`` of
attention's ``[B, H, S, d]`` output reshaped to ``[B, S, H*d]`` becomes one
``heads_to_feature_major`` copy. A BERT layer then has no conversion left (the records
list them as ``absorbed``).

Limits (conservative on purpose): attention itself stays row-major; convs and un-fused LayerNorms are boundaries;
broadcasting binary ops (other than scalars) are boundaries; a sparse op whose input
shape is unknown (no shape meta) stays row-major; reshapes are only looked through in
``torch.export`` graphs (static shapes).

Numerics: the values are the same; only the GEMM orientation changes
(``W @ x`` vs ``x @ W.T``), which agrees to float rounding.

Before: ``substitute_ops`` (and the fusion passes) ran; needs shape meta. After: records
list every conversion left (``to_feature_major`` / ``from_feature_major`` and the value it
converts) and the feature-major node count. Idempotent: no row-major sparse op left to
start a chain, and the pair clean-up finds nothing.
"""
from __future__ import annotations

import operator
from typing import Any, Optional

import networkx as nx
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from sparsefx.passes._match import (SPARSE_LINEAR_OPS, op_arg, arg, dtype_of, match_activation,
                                    match_identity_dropout, set_shape_meta, shape_of)
from sparsefx.passes.infra import LAYER_META, PassContext, PassResult, Record
from sparsefx.runtime import layout
from sparsefx.runtime.norm_ops import OP as BRLN_OP

aten = torch.ops.aten
_SOURCE, _SINK = "__fm__", "__rm__"
_UNARY_FNS = {torch.tanh, torch.sigmoid, torch.neg, torch.exp, torch.erf, F.gelu, F.silu,
              F.relu, torch.relu, F.sigmoid, F.tanh, operator.neg,
              aten.relu.default, aten.gelu.default, aten.silu.default, aten.tanh.default,
              aten.sigmoid.default, aten.neg.default, aten.exp.default, aten.erf.default}
_BINARY_FNS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.pow,
               torch.add, torch.sub, torch.mul, torch.div, torch.pow,
               aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor,
               aten.add.Scalar, aten.sub.Scalar, aten.mul.Scalar, aten.div.Scalar,
               aten.pow.Tensor_Scalar}
_ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid", "neg", "exp", "add", "sub", "mul",
                        "div", "pow"}
_UNARY_MODULES = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity)
_RESHAPE_FNS = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}


class PropagateLayout:
    name = "propagate_layout"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        if getattr(ctx.config, "layout", "row_major") != "feature_major":
            return PassResult(gm, False, [])     # compile(..., layout="row_major")
        graph = gm.graph
        removed_pairs = _remove_pairs(graph)
        kinds = {n: _classify(gm, n, ctx) for n in graph.nodes}
        seeds = [n for n, k in kinds.items() if k and k[0] == "seed"]
        if not seeds:
            return self._result(gm, removed_pairs, 0)
        fm_nodes = _choose_layouts(graph, kinds)
        _rewrite(gm, kinds, fm_nodes)
        removed_pairs += _remove_pairs(graph)
        absorbed = _write_row_major_directly(graph) + _attention_output_to_fm(graph)
        graph.eliminate_dead_code()
        graph.lint()
        gm.recompile()
        return self._result(gm, removed_pairs, len(fm_nodes), modified=True,
                            absorbed=absorbed)

    def _result(self, gm, removed_pairs: int, fm_count: int, modified: bool = False,
                absorbed: Optional[list] = None):
        if removed_pairs:
            graph_changed = True
            gm.graph.eliminate_dead_code()
            gm.recompile()
        else:
            graph_changed = modified
        records = [Record("converted", _converted_name(n), {
            "direction": "to_feature_major" if n.target is layout.to_feature_major
            else "from_feature_major", "node": n.name,
            "numel": _numel(n.args[0]) or 0})
            for n in gm.graph.nodes if _is_conversion(n)]
        transposes = len(records)
        records += absorbed or []
        records.append(Record("summary", None, {
            "feature_major_nodes": fm_count, "transposes": transposes,
            "removed_pairs": removed_pairs, "absorbed": len(absorbed or [])}))
        return PassResult(gm, graph_changed, records)


# --------------------------------------------------------------------------- classify
def _classify(gm: fx.GraphModule, node: fx.Node, ctx: PassContext) -> Optional[tuple]:
    """``("seed", [inputs])`` / ``("flex", [inputs])`` / ``("reshape", [input])`` or None
    (row-major). ``inputs`` are the full-shape activation operands whose layout must
    match the node's."""
    if node.op == "call_function" and node.target in SPARSE_LINEAR_OPS:
        x = node.args[0]
        fm = op_arg(node, "feature_major")
        shape = shape_of(x)
        if fm or shape is None or len(shape) < 2 or shape_of(node) is None:
            return None
        if isinstance(x, fx.Node) and x.op == "call_function" and x.target is aten.t.default:
            return None      # already reads a feature-major value (an earlier run)
        return ("seed", [x])
    out = shape_of(node)
    if out is None or len(out) < 1:
        return None
    if node.op == "call_function" and node.target is BRLN_OP:
        if node.args[6] if len(node.args) > 6 else node.kwargs.get("feature_major", False):
            return None
        return ("flex", [node.args[0], node.args[1]])
    if node.op == "call_function" and node.target in _RESHAPE_FNS:
        return _classify_reshape(node, out, ctx)
    inputs = _elementwise_inputs(gm, node, out)
    return ("flex", inputs) if inputs else None


def _classify_reshape(node: fx.Node, out: tuple, ctx: PassContext) -> Optional[tuple]:
    if ctx.frontend != "torch.export":
        return None
    src = node.args[0]
    in_shape = shape_of(src)
    if in_shape is None or any(isinstance(a, fx.Node) for a in node.args[1:]):
        return None
    if len(in_shape) < 1 or in_shape[-1] != out[-1] or len(out) < 2:
        return None
    return ("reshape", [src])


def _elementwise_inputs(gm: fx.GraphModule, node: fx.Node, out: tuple) -> Optional[list]:
    """The tensor operands of a layout-agnostic elementwise node (all of the output's
    shape and dtype; the others must be Python scalars), or None."""
    if match_identity_dropout(gm, node) is not None or match_activation(gm, node) is not None:
        operands = [node.args[0]]
    elif node.op == "call_function" and (node.target in _UNARY_FNS or
                                         node.target in _BINARY_FNS):
        operands = list(node.args) + list(node.kwargs.values())
    elif node.op == "call_method" and node.target in _ELEMENTWISE_METHODS:
        operands = list(node.args) + list(node.kwargs.values())
    elif node.op == "call_module" and isinstance(gm.get_submodule(node.target),
                                                 _UNARY_MODULES):
        operands = [node.args[0]]
    else:
        return None
    tensors = [o for o in operands if isinstance(o, fx.Node)]
    if not tensors or any(not isinstance(o, (fx.Node, int, float, bool, str, type(None)))
                          for o in operands):
        return None
    if node.op == "call_function" and node.target is F.gelu and \
            any(isinstance(v, fx.Node) for v in node.kwargs.values()):
        return None
    for t in tensors:
        if shape_of(t) != out or dtype_of(t) != dtype_of(node):
            return None
    return list(dict.fromkeys(tensors))


# --------------------------------------------------------------------------- min cut
def _choose_layouts(graph: fx.Graph, kinds: dict) -> set[fx.Node]:
    """The set of nodes to run feature-major (see the module docstring)."""
    g = nx.DiGraph()
    g.add_node(_SOURCE)
    g.add_node(_SINK)
    consumers: dict[fx.Node, list[fx.Node]] = {}
    for node in graph.nodes:
        kind = kinds.get(node)
        if kind is None:
            continue
        if kind[0] == "seed":
            g.add_edge(_SOURCE, node)                 # infinite: must be feature-major
        for src in kind[1]:
            consumers.setdefault(src, [])
    for src in consumers:
        consumers[src] = list(src.users)
        if kinds.get(src) is None:
            g.add_edge(src, _SINK)                    # infinite: must be row-major
        cost = max(_numel(src) or 1, 1)
        fm_copy, rm_copy = ("fm", src), ("rm", src)
        g.add_edge(fm_copy, src, capacity=cost)       # src row-major, FM copy needed
        g.add_edge(src, rm_copy, capacity=cost)       # src feature-major, RM copy needed
        for user in src.users:
            g.add_edge(rm_copy, user)                 # user RM => RM copy exists
            if kinds.get(user) is not None and src in kinds[user][1]:
                g.add_edge(user, fm_copy)             # user FM => FM copy exists
            elif kinds.get(user) is None:
                g.add_edge(user, _SINK)
    # flexible nodes that feed only row-major consumers still need their user edges
    for node, kind in kinds.items():
        if kind is not None and node not in consumers:
            consumers[node] = list(node.users)
            g.add_edge(node, ("rm", node), capacity=max(_numel(node) or 1, 1))
            for user in node.users:
                g.add_edge(("rm", node), user)
                if kinds.get(user) is None:
                    g.add_edge(user, _SINK)
    _, (fm_side, _) = nx.minimum_cut(g, _SOURCE, _SINK)
    return {n for n in fm_side if isinstance(n, fx.Node)}


# --------------------------------------------------------------------------- rewrite
def _rewrite(gm: fx.GraphModule, kinds: dict, fm_nodes: set[fx.Node]) -> None:
    graph = gm.graph
    order = {n: i for i, n in enumerate(graph.nodes)}
    fm_value: dict[fx.Node, fx.Node] = {}     # node -> its feature-major value
    rm_shape = {n: shape_of(n) for n in graph.nodes}
    for node in list(graph.nodes):
        if node not in fm_nodes:
            continue
        kind, inputs = kinds[node]
        for src in inputs:
            if src not in fm_value:
                fm_value[src] = _to_fm(graph, src, fm_nodes, order, kinds)
        if kind == "reshape":
            fm_value[node] = fm_value[inputs[0]]
            continue
        node.args = tuple(fm_value.get(a, a) if a in inputs else a for a in node.args)
        node.kwargs = {k: fm_value.get(v, v) if v in inputs else v
                       for k, v in node.kwargs.items()}
        if kind == "seed" or node.target is BRLN_OP:
            _set_feature_major(node)
        _set_fm_meta(node, rm_shape[node])
        fm_value[node] = node
    for node in list(graph.nodes):
        if node in fm_nodes:
            _convert_rm_users(graph, node, fm_value[node], fm_nodes, kinds, rm_shape, order)


def _to_fm(graph, src, fm_nodes, order, kinds) -> fx.Node:
    """One ``to_feature_major(src)``, placed before src's first feature-major user."""
    users = [u for u in src.users if u in fm_nodes and src in kinds[u][1]]
    first = min(users, key=lambda u: order[u])
    with graph.inserting_before(first):
        conv = graph.call_function(layout.to_feature_major, (src,))
    _set_fm_meta(conv, shape_of(src), like=src)
    return conv


def _convert_rm_users(graph, node, value, fm_nodes, kinds, rm_shape, order) -> None:
    # every feature-major user reads feature-major values now (its args were rewritten)
    rm_users = [u for u in node.users
                if u not in fm_nodes and not _is_conversion_of(u, node)]
    if not rm_users:
        return
    shape = rm_shape[node]
    like = _row_major_ancestor(node, fm_nodes, kinds, rm_shape)
    first = min(rm_users, key=lambda u: order.get(u, len(order)))
    with graph.inserting_before(first):
        if like is not None:
            conv = graph.call_function(layout.from_feature_major, (value, like))
        else:
            conv = graph.call_function(layout.from_feature_major, (value, None, list(shape)))
    for key in ("val", "tensor_meta"):
        if key in node.meta and key not in conv.meta:
            conv.meta[key] = node.meta.get(f"sparsefx.rm_{key}", node.meta[key])
    for user in rm_users:
        user.replace_input_with(node, conv)


def _is_conversion_of(user: fx.Node, node: fx.Node) -> bool:
    return _is_conversion(user) and user.args[0] is node


def _row_major_ancestor(node, fm_nodes, kinds, rm_shape) -> Optional[fx.Node]:
    """A row-major node feeding this chain with the same token dims as ``node`` (so the
    from-conversion can read the batch shape at run time)."""
    want = rm_shape[node][:-1] if rm_shape[node] else None
    seen, stack = set(), [node]
    while stack:
        cur = stack.pop()
        if cur in seen:
            continue
        seen.add(cur)
        if cur not in fm_nodes:
            if rm_shape.get(cur) is not None and rm_shape[cur][:-1] == want:
                return cur
            continue
        if kinds[cur][0] == "reshape":
            continue          # token dims change here: only the static shape is safe
        stack.extend(kinds[cur][1] if cur in kinds and kinds[cur] else [])
    return None


def _set_feature_major(node: fx.Node, value: bool = True) -> None:
    if node.target is BRLN_OP:
        names = ["x", "residual", "bias", "weight", "ln_bias", "eps", "feature_major"]
    else:
        names = [a.name for a in node.target._schema.arguments]
    index = names.index("feature_major")
    args = list(node.args)
    if len(args) > index:
        args[index] = value
        node.args = tuple(args)
    else:
        node.kwargs = {**node.kwargs, "feature_major": value}


def _set_fm_meta(node: fx.Node, shape: Optional[tuple], like: Optional[fx.Node] = None) -> None:
    """Shape meta of the ``[F, T]`` value; the row-major meta is kept under
    ``sparsefx.rm_*`` for the from-conversions."""
    if shape is None:
        return
    tokens = 1
    for d in shape[:-1]:
        tokens *= d
    fm_shape = (shape[-1], tokens)
    src = like if like is not None else node
    val = src.meta.get("val")
    dtype = dtype_of(src) or torch.float32
    for key in ("val", "tensor_meta"):
        if key in node.meta:
            node.meta[f"sparsefx.rm_{key}"] = node.meta[key]
    set_shape_meta(node, fm_shape, dtype, val)


# --------------------------------------------------------------------------- clean-up
def _is_conversion(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in (layout.to_feature_major,
                                                          layout.from_feature_major)


def _remove_pairs(graph: fx.Graph) -> int:
    """``to_feature_major(from_feature_major(y))`` is ``y``: drop such pairs."""
    removed = 0
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is layout.to_feature_major:
            src = node.args[0]
            if isinstance(src, fx.Node) and src.op == "call_function" and \
                    src.target is layout.from_feature_major:
                node.replace_all_uses_with(src.args[0])
                graph.erase_node(node)
                if not src.users:
                    graph.erase_node(src)
                removed += 1
    return removed


# --------------------------------------------------------------------------- absorb
def _write_row_major_directly(graph: fx.Graph) -> list[Record]:
    """``from_feature_major(op(x_fm, feature_major=True))`` → ``op(x_fm.t(),
    feature_major=False)``: the same op reads the feature-major input through a
    transposed *view* (``[M, K]`` with strides ``(1, M)``) and writes row-major, so the
    transpose copy after it disappears. The tile kernel gathers from exactly that view
    without copying (the row-major path transposes ``x`` to ``[K, M]`` first, which is
    then a no-op) and cuBLAS takes the transposed operand natively (dense fallback).
    Typical case: attention's Q/K/V projections reading a feature-major LayerNorm."""
    records = []
    for conv in list(graph.nodes):
        if not (conv.op == "call_function" and conv.target is layout.from_feature_major):
            continue
        op = conv.args[0]
        if not (isinstance(op, fx.Node) and op.op == "call_function"
                and op.target in SPARSE_LINEAR_OPS and len(op.users) == 1
                and op_arg(op, "feature_major") is True):
            continue
        x = op.args[0]
        fm_meta = x.meta.get("tensor_meta") if isinstance(x, fx.Node) else None
        out_meta = conv.meta.get("tensor_meta")
        if fm_meta is None or out_meta is None or len(fm_meta.shape) != 2:
            continue
        with graph.inserting_before(op):
            xt = graph.call_function(aten.t.default, (x,))
        K, M = fm_meta.shape
        _set_meta(xt, torch.empty_strided((M, K), (1, M), dtype=fm_meta.dtype,
                                          device="meta"))
        op.args = (xt, *op.args[1:])
        _set_feature_major(op, False)
        _set_meta(op, torch.empty((M, out_meta.shape[-1]), dtype=out_meta.dtype,
                                  device="meta"))
        with graph.inserting_after(op):
            rows = graph.call_function(layout.tokens_to_shape, (op, *conv.args[1:]))
        for key in ("val", "tensor_meta"):
            if key in conv.meta:
                rows.meta[key] = conv.meta[key]
        conv.replace_all_uses_with(rows)
        graph.erase_node(conv)
        records.append(Record("absorbed", _converted_name(rows), {
            "direction": "from_feature_major", "into": op.name}))
    return records


def _attention_output_to_fm(graph: fx.Graph) -> list[Record]:
    """``to_feature_major(reshape(transpose(a, 1, 2), [B, S, H*d]))`` with ``a`` the
    ``[B, H, S, d]`` attention output → ``heads_to_feature_major(a)``: one copy instead of
    two (the reshape of the transposed heads copies, then the conversion copies again)."""
    records = []
    for conv in list(graph.nodes):
        if not (conv.op == "call_function" and conv.target is layout.to_feature_major):
            continue
        heads = _heads_source(conv.args[0])
        if heads is None:
            continue
        with graph.inserting_before(conv):
            fused = graph.call_function(layout.heads_to_feature_major, (heads,))
        for key in ("val", "tensor_meta"):
            if key in conv.meta:
                fused.meta[key] = conv.meta[key]
        conv.replace_all_uses_with(fused)
        graph.erase_node(conv)
        records.append(Record("absorbed", getattr(heads, "name", None), {
            "direction": "to_feature_major", "into": fused.name}))
    return records


def _heads_source(node: Any) -> Optional[fx.Node]:
    """``a`` when ``node = reshape(transpose(a, 1, 2), [B, S, H*d])`` (optionally with a
    ``contiguous`` copy before the reshape) and ``a`` is 4-D
    ``[B, H, S, d]`` (static shapes), else ``None``."""
    if not (isinstance(node, fx.Node) and node.op == "call_function"
            and node.target in _RESHAPE_FNS):
        return None
    tr = node.args[0]
    if isinstance(tr, fx.Node) and tr.op == "call_function" and \
            tr.target in (aten.clone.default, aten.contiguous.default):
        tr = tr.args[0]          # ``.contiguous()`` before the reshape (HF's sdpa path)
    if not (isinstance(tr, fx.Node) and tr.op == "call_function"
            and tr.target is aten.transpose.int and sorted(tr.args[1:3]) == [1, 2]):
        return None
    src = tr.args[0]
    a_shape, out_shape = shape_of(src), shape_of(node)
    if a_shape is None or out_shape is None or len(a_shape) != 4 or len(out_shape) != 3:
        return None
    B, H, S, d = a_shape
    return src if tuple(out_shape) == (B, S, H * d) else None


def _set_meta(node: fx.Node, example: torch.Tensor) -> None:
    node.meta["val"] = example
    node.meta["tensor_meta"] = _extract_tensor_metadata(example)


def _numel(node: Any) -> Optional[int]:
    shape = shape_of(node)
    if shape is None:
        meta = node.meta.get("sparsefx.rm_tensor_meta") if isinstance(node, fx.Node) else None
        shape = tuple(meta.shape) if meta is not None else None
    if shape is None:
        return None
    total = 1
    for d in shape:
        total *= d
    return total


def _converted_name(node: fx.Node) -> str:
    src = node.args[0]
    info = src.meta.get(LAYER_META) if isinstance(src, fx.Node) else None
    return info.name if info is not None else getattr(src, "name", str(src))
