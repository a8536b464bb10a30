"""fuse_epilogue: move a following bias add and ReLU / GELU / SiLU into the sparse op.

Why: each separate elementwise node is one more kernel that reads and writes the whole
activation (paper 002 §VI "Kernel Fusion"); the sparse ops take ``bias`` and
``activation`` arguments so their kernels apply both in the GEMM epilogue while the
output tile is still in registers.

Matches, for ``sparsefx::tile_linear`` / ``tew_linear`` and the im2col conv wrappers
(:func:`~sparsefx.runtime.conv.tile_conv` / ``tew_conv``):

* ``op(..., bias=None) -> add(op, b)`` with ``b`` a ``get_attr`` vector of shape
  ``[out_features]`` and the op row-major (linear ops only): ``b`` becomes the op's bias;
* ``op(..., activation='none') -> relu | gelu (exact, approximate='none') | silu``:
  the activation becomes the op's ``activation``.

Only when the op's output has exactly one user (the node being absorbed), so no other
consumer loses the pre-activation value. ``gelu`` with ``approximate='tanh'`` (GPT-2's
``gelu_new`` is spelled out elementwise) is not the op's GELU and is left alone.

Before: ``substitute_ops`` ran. After: absorbed nodes are gone; the op node carries the
absorbed node's shape meta. Idempotent: a fused op has a bias / an activation already.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import fx

from sparsefx.passes._match import (SPARSE_LINEAR_OPS, op_arg, copy_meta, dtype_of, match_activation,
                                    match_add, shape_of)
from sparsefx.passes.infra import LAYER_META, PassContext, PassResult, Record
from sparsefx.runtime import conv

# Python-function ops: (index of bias, index of activation) in their positional args.
_CONV_WRAPPERS = {conv.tile_conv: (5, 11), conv.tew_conv: (8, 14)}


class FuseEpilogue:
    name = "fuse_epilogue"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        records = []
        for node in list(gm.graph.nodes):
            if not _is_fusable_op(node):
                continue
            while True:   # bias first, then the activation after it
                absorbed = _fuse_bias(gm, node) or _fuse_activation(gm, node)
                if absorbed is None:
                    break
                records.append(Record("fused", _layer_name(node), {"absorbed": absorbed}))
        if records:
            gm.graph.lint()
            gm.recompile()
        return PassResult(gm, bool(records), records)


# --------------------------------------------------------------------------- arguments
def _is_fusable_op(node: fx.Node) -> bool:
    return node.op == "call_function" and (node.target in SPARSE_LINEAR_OPS
                                           or node.target in _CONV_WRAPPERS)


def _index(node: fx.Node, name: str) -> int:
    if node.target in _CONV_WRAPPERS:
        bias, act = _CONV_WRAPPERS[node.target]
        return {"bias": bias, "activation": act}[name]
    names = [a.name for a in node.target._schema.arguments]
    return names.index(name)


def get_op_arg(node: fx.Node, name: str) -> Any:
    """An argument of a sparse op node by name, with the schema default."""
    index = _index(node, name)
    if len(node.args) > index:
        return node.args[index]
    if name in node.kwargs:
        return node.kwargs[name]
    if node.target in _CONV_WRAPPERS:
        return "none" if name == "activation" else None
    return op_arg(node, name)


def set_op_arg(node: fx.Node, name: str, value: Any) -> None:
    """Set an argument positionally (fills defaults up to it) so the call stays
    positional, as ``substitute_ops`` writes it."""
    index = _index(node, name)
    args = list(node.args)
    while len(args) <= index:
        missing = len(args)
        key = _name_at(node, missing)
        args.append(node.kwargs[key] if key in node.kwargs else _default_at(node, missing))
    args[index] = value
    node.args = tuple(args)
    node.kwargs = {k: v for k, v in node.kwargs.items()
                   if _position(node, k) is None or _position(node, k) >= len(args)}


def _name_at(node: fx.Node, index: int) -> Optional[str]:
    if node.target in _CONV_WRAPPERS:
        return "activation" if index == _CONV_WRAPPERS[node.target][1] else None
    return node.target._schema.arguments[index].name


def _default_at(node: fx.Node, index: int) -> Any:
    if node.target in _CONV_WRAPPERS:
        return "none"
    return node.target._schema.arguments[index].default_value


def _position(node: fx.Node, key: str) -> Optional[int]:
    try:
        return _index(node, key)
    except (KeyError, ValueError):
        return None


def _layer_name(node: fx.Node) -> Optional[str]:
    info = node.meta.get(LAYER_META)
    return info.name if info is not None else node.name


# --------------------------------------------------------------------------- fusions
def _single_user(node: fx.Node) -> Optional[fx.Node]:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _fuse_bias(gm: fx.GraphModule, node: fx.Node) -> Optional[str]:
    if node.target not in SPARSE_LINEAR_OPS or get_op_arg(node, "bias") is not None:
        return None
    if get_op_arg(node, "feature_major") or get_op_arg(node, "activation") != "none":
        return None
    user = _single_user(node)
    operands = match_add(user) if user is not None else None
    if operands is None:
        return None
    other = operands[1] if operands[0] is node else operands[0]
    if other is node or not _is_bias_vector(gm, other, get_op_arg(node, "out_features"),
                                            dtype_of(node)):
        return None
    # symbolic_trace emits get_attr where first used, often after the op: read it anew
    with node.graph.inserting_before(node):
        bias = node.graph.get_attr(other.target)
    copy_meta(other, bias)
    set_op_arg(node, "bias", bias)
    _absorb(node, user)
    if not other.users:
        node.graph.erase_node(other)
    return "bias"


def _is_bias_vector(gm: fx.GraphModule, value: Any, out_features: int,
                    dtype: Optional[torch.dtype]) -> bool:
    """A parameter/buffer ``[out_features]`` of the op's dtype (so the add's type
    promotion cannot differ from the fused epilogue's)."""
    if not (isinstance(value, fx.Node) and value.op == "get_attr"):
        return False
    from sparsefx.layers import get_attr_path
    tensor = get_attr_path(gm, value.target)
    return (isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == (out_features,)
            and (dtype is None or tensor.dtype == dtype))


def _fuse_activation(gm: fx.GraphModule, node: fx.Node) -> Optional[str]:
    if get_op_arg(node, "activation") != "none":
        return None
    user = _single_user(node)
    matched = match_activation(gm, user) if user is not None else None
    if matched is None or matched[0] is not node:
        return None
    if shape_of(user) is not None and shape_of(node) is not None and \
            shape_of(user) != shape_of(node):
        return None
    set_op_arg(node, "activation", matched[1])
    _absorb(node, user)
    return matched[1]


def _absorb(node: fx.Node, user: fx.Node) -> None:
    """``node`` now computes what ``user`` computed: take its meta and its users."""
    copy_meta(user, node)
    user.replace_all_uses_with(node)
    user.graph.erase_node(user)
