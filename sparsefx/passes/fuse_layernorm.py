"""fuse_layernorm: linear → (+bias) → (dropout) → (+residual) → LayerNorm as one op.

Why: the tail of every BERT/ViT sub-block (``LayerNorm(dropout(dense(h)) + residual)``)
is four memory-bound kernels after the GEMM; ``sparsefx::bias_residual_layernorm``
does them in one pass over the data (paper 002 §VI "Kernel Fusion", §VII-D: unfused
non-GEMM kernels turned a 2.26× GEMM speedup into 1.61× end to end).

Matched chain, ending at a LayerNorm over the last axis (``nn.LayerNorm``,
``F.layer_norm``, ``aten.layer_norm``) with a 1-D ``normalized_shape == [N]``::

    s = tile_linear/tew_linear(...)        # row-major; its only user is the chain
    s = add(s, b)                          # optional, b a get_attr [N] vector
    s = dropout(s)                         # optional, inference-mode (identity)
    a = add(s, residual)                   # either operand order; only user: the LN
    y = layer_norm(a, [N], w, beta, eps)

→ ``y = bias_residual_layernorm(s, residual, b, w, beta, eps, False)``. The fused sum is
``(s + b) + residual``, the unfused order, so the CPU result is bit-identical.

Feature-major graphs (after ``propagate_layout``) have the same chain with the sparse op
feature-major and a ``from_feature_major`` conversion after it; then the fused op runs
feature-major on the op's ``[N, T]`` output and one conversion follows it (the residual
is converted with ``to_feature_major`` unless it is itself a conversion).

Must not fire when an intermediate value has other users, when the residual's shape or
dtype differs (the add would broadcast or promote), or when the LayerNorm is not over
exactly the feature axis. Before: ``substitute_ops`` (and normally ``fuse_epilogue``) ran.
After: matched chains are one op node carrying the LayerNorm's meta. Idempotent.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import fx

from sparsefx.passes._match import (SPARSE_LINEAR_OPS, op_arg, arg, copy_meta, dtype_of,
                                    match_add, match_identity_dropout, match_layer_norm,
                                    shape_of)
from sparsefx.passes.infra import LAYER_META, PassContext, PassResult, Record
from sparsefx.runtime import layout
from sparsefx.runtime.norm_ops import OP as BRLN_OP


class FuseLayernorm:
    name = "fuse_layernorm"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        records = []
        for node in list(gm.graph.nodes):
            ln = match_layer_norm(gm, node)
            if ln is None:
                continue
            match = _match_chain(gm, node, ln)
            if match is None:
                continue
            new = _rewrite(gm, node, ln, match)
            info = match["op"].meta.get(LAYER_META)
            records.append(Record("fused", info.name if info else match["op"].name, {
                "into": new.name, "bias": match["bias"] is not None,
                "dropout": match["dropout"], "feature_major": match["feature_major"]}))
        if records:
            gm.graph.eliminate_dead_code()
            gm.graph.lint()
            gm.recompile()
        return PassResult(gm, bool(records), records)


# --------------------------------------------------------------------------- matching
def _match_chain(gm: fx.GraphModule, ln_node: fx.Node, ln: dict) -> Optional[dict]:
    add = ln["input"]
    if not isinstance(add, fx.Node) or len(add.users) != 1:
        return None
    operands = match_add(add)
    if operands is None or not all(isinstance(o, fx.Node) for o in operands):
        return None
    for branch, residual in (operands, operands[::-1]):
        found = _walk_to_op(gm, branch)
        if found is None or residual is branch:
            continue
        n = get_out_features(found["op"])
        if tuple(ln["normalized_shape"] or ()) != (n,):
            continue
        if not _same_tensor_type(branch, residual) or residual is found["op"]:
            continue
        return {**found, "residual": residual}
    return None


def _walk_to_op(gm: fx.GraphModule, node: fx.Node) -> Optional[dict[str, Any]]:
    """From the add's operand back to the sparse op through (dropout), (from_fm),
    (bias add); every hop must be the only user of what it consumes."""
    dropout, conversion = False, None
    while True:   # peel an identity dropout and a from-conversion, in either order
        source = None if dropout else match_identity_dropout(gm, node)
        if source is not None:
            dropout, node = True, source
        elif conversion is None and _is_from_fm(node):
            conversion, node = node, node.args[0]
        else:
            break
        if not isinstance(node, fx.Node) or len(node.users) != 1:
            return None
    bias = None
    operands = match_add(node)
    if operands is not None and conversion is None:
        op, vec = operands if _is_sparse(operands[0]) else operands[::-1]
        if not _is_sparse(op) or len(op.users) != 1 or not _is_vector(gm, vec, op):
            return None
        bias, node = vec, op
    # (an activation inside the op is fine: the chain adds b after it, as the op does)
    if not _is_sparse(node) or len(node.users) != 1:
        return None
    if bool(op_arg(node, "feature_major")) != (conversion is not None):
        return None
    return {"op": node, "bias": bias, "dropout": dropout, "conversion": conversion,
            "feature_major": conversion is not None}


def _is_sparse(node: Any) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and \
        node.target in SPARSE_LINEAR_OPS


def _is_from_fm(node: Any) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and \
        node.target is layout.from_feature_major


def _is_vector(gm: fx.GraphModule, value: Any, op: fx.Node) -> bool:
    if not (isinstance(value, fx.Node) and value.op == "get_attr"):
        return False
    from sparsefx.layers import get_attr_path
    tensor = get_attr_path(gm, value.target)
    return isinstance(tensor, torch.Tensor) and \
        tuple(tensor.shape) == (get_out_features(op),) and \
        (dtype_of(op) is None or tensor.dtype == dtype_of(op))


def _same_tensor_type(a: fx.Node, b: fx.Node) -> bool:
    """Both shapes known and equal, dtypes equal: the add neither broadcasts nor
    promotes, which the fused op (same-shape inputs) relies on."""
    sa, sb = shape_of(a), shape_of(b)
    return sa is not None and sa == sb and dtype_of(a) == dtype_of(b)


def get_out_features(node: fx.Node) -> int:
    return op_arg(node, "out_features")


# --------------------------------------------------------------------------- rewrite
def _rewrite(gm: fx.GraphModule, ln_node: fx.Node, ln: dict, match: dict) -> fx.Node:
    graph = gm.graph
    with graph.inserting_before(ln_node):
        weight, ln_bias = (_ln_param(graph, ln[k]) for k in ("weight", "bias"))
        fm = match["feature_major"]
        residual = match["residual"]
        if fm:
            residual = _feature_major_residual(graph, residual)
        fused = graph.call_function(BRLN_OP, (match["op"], residual, match["bias"], weight,
                                              ln_bias, float(ln["eps"]), fm))
        result = fused
        if fm:
            conv_args = match["conversion"]
            result = graph.call_function(layout.from_feature_major,
                                         (fused, *conv_args.args[1:]), dict(conv_args.kwargs))
            _fm_meta(match["op"], fused)
    copy_meta(ln_node, result)
    if not fm:
        copy_meta(ln_node, fused)
    chain = _chain_nodes(ln["input"], match)
    ln_node.replace_all_uses_with(result)
    graph.erase_node(ln_node)
    # erase explicitly: DCE keeps aten.dropout (it counts as impure, being random)
    for node in chain:
        if not node.users:
            graph.erase_node(node)
    return fused


def _chain_nodes(add: fx.Node, match: dict) -> list[fx.Node]:
    """The nodes between the LayerNorm and the sparse op, last first."""
    nodes, node = [], add
    while isinstance(node, fx.Node) and node is not match["op"]:
        nodes.append(node)
        if node is match["conversion"]:
            node = node.args[0]
            continue
        node = next((a for a in node.all_input_nodes
                     if a is not match["residual"] and a is not match["bias"]), None)
    return nodes


def _ln_param(graph: fx.Graph, value: Any) -> Any:
    """LayerNorm weight/bias as a node (``nn.LayerNorm`` parameters need a get_attr)."""
    if isinstance(value, str) and value.startswith("module:"):
        return graph.get_attr(value[len("module:"):])
    return value


def _feature_major_residual(graph: fx.Graph, residual: fx.Node) -> fx.Node:
    if _is_from_fm(residual):
        return residual.args[0]
    node = graph.call_function(layout.to_feature_major, (residual,))
    shape = shape_of(residual)
    if shape is not None and "val" in residual.meta:
        try:
            val = residual.meta["val"]
            node.meta["val"] = val.new_empty((shape[-1], val.numel() // shape[-1]))
        except Exception:   # meta is a convenience here; shape_of() then says unknown
            pass
    return node


def _fm_meta(op: fx.Node, fused: fx.Node) -> None:
    copy_meta(op, fused)
