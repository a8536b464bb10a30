"""substitute_ops: replace each packed layer's matmul node with a ``sparsefx`` op.

Why: this is the rewrite that makes the model run the sparse kernels. Linear-like
nodes (``nn.Linear``, ``F.linear``, ``aten.linear``, HF ``Conv1D``'s ``addmm``) become
``sparsefx::tile_linear`` (or ``sparsefx::tew_linear`` when TEW restored elements);
convolutions become :func:`~sparsefx.runtime.conv.tile_conv` / ``tew_conv``, the
im2col GEMM on the same ops. The op reads the packed tensors through ``get_attr``.

Before: ``pack_weights`` ran (``LayerInfo.packed_path`` set). After: no node of a packed
layer calls the dense weight; the new node carries the old node's shape meta and
``node.meta["sparsefx.layer"]``. The now-unused dense weights are removed by
``clean_graph``.
"""
from __future__ import annotations

import torch
from torch import fx

from sparsefx.layers import LayerInfo, get_attr_path
from sparsefx.passes.infra import LAYER_META, PassContext, PassResult, Record
from sparsefx.runtime import conv
from sparsefx.runtime.packed import EW_TENSORS, TILE_TENSORS

_META_KEYS = ("val", "tensor_meta", "stack_trace", "nn_module_stack", "source_fn_stack")


class SubstituteOps:
    name = "substitute_ops"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        records = []
        for node in list(gm.graph.nodes):
            info = node.meta.get(LAYER_META)
            if info is None or info.packed_path is None or _is_rewritten(node):
                continue
            new = _rewrite(gm, node, info)
            records.append(Record("substituted", info.name, {"op": info.op}))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
        if records:
            gm.recompile()
        return PassResult(gm, bool(records), records)


def _is_rewritten(node: fx.Node) -> bool:
    return node.meta.get("sparsefx.rewritten", False)


def _rewrite(gm: fx.GraphModule, node: fx.Node, info: LayerInfo) -> fx.Node:
    packed = get_attr_path(gm, info.packed_path)
    graph = gm.graph
    with graph.inserting_before(node):
        attrs = {name: graph.get_attr(f"{info.packed_path}.{name}")
                 for name in TILE_TENSORS + (EW_TENSORS if packed.has_ew else ())}
        bias = graph.get_attr(f"{info.packed_path}.bias") if packed.bias is not None else None
        tile_args = [attrs[name] for name in TILE_TENSORS]
        ew_args = [attrs[name] for name in EW_TENSORS] if packed.has_ew else []
        x = _layer_input(node, info)
        if info.kind in ("conv1d", "conv2d"):
            fn = conv.tew_conv if packed.has_ew else conv.tile_conv
            p = info.conv_params
            new = graph.call_function(fn, (x, *tile_args, *ew_args, bias, packed.out_features,
                                           tuple(info.weight_shape[2:]), tuple(p["stride"]),
                                           tuple(p["padding"]), tuple(p["dilation"])))
            info.op = ("tew_linear" if packed.has_ew else "tile_linear") + " (im2col)"
        else:
            op = torch.ops.sparsefx.tew_linear.default if packed.has_ew else \
                torch.ops.sparsefx.tile_linear.default
            new = graph.call_function(op, (x, *tile_args, *ew_args, bias,
                                           packed.out_features, "none", False))
            info.op = "tew_linear" if packed.has_ew else "tile_linear"
    for key in _META_KEYS:
        if key in node.meta:
            new.meta[key] = node.meta[key]
    new.meta[LAYER_META] = info
    new.meta["sparsefx.rewritten"] = True
    return new


def _layer_input(node: fx.Node, info: LayerInfo) -> fx.Node:
    if info.kind == "addmm":
        return node.args[1] if len(node.args) > 1 else node.kwargs["mat1"]
    return node.args[0] if node.args else node.kwargs["input"]
