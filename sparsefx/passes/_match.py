"""Node-matching helpers shared by the fusion and layout passes (not a pass).

Why one place: the same op is spelled several ways depending on the frontend —
``nn.ReLU`` (``call_module``), ``F.relu`` / ``torch.relu`` (``symbolic_trace``),
``aten.relu.default`` (``torch.export``), ``x.relu()`` (``call_method``). Every pass
that matches "a ReLU" or "an inference-mode dropout" must agree on what counts.
"""
from __future__ import annotations

import operator
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

aten = torch.ops.aten

#: the sparse linear ops whose epilogue / layout the passes may change
SPARSE_LINEAR_OPS = (torch.ops.sparsefx.tile_linear.default,
                     torch.ops.sparsefx.tew_linear.default)

_RELU_FNS = {torch.relu, F.relu, aten.relu.default}
_GELU_FNS = {F.gelu, aten.gelu.default}
_SILU_FNS = {F.silu, aten.silu.default}
_DROPOUT_FNS = {F.dropout, aten.dropout.default, torch.dropout}


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Positional-or-keyword argument of a call node."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def shape_of(node: Any) -> Optional[tuple]:
    """Static shape from ``val`` / ``tensor_meta``; None when unknown or symbolic."""
    if not isinstance(node, fx.Node):
        return None
    val = node.meta.get("val")
    shape = getattr(val, "shape", None)
    if shape is None:
        meta = node.meta.get("tensor_meta")
        shape = getattr(meta, "shape", None)
    if shape is None:
        return None
    if not all(isinstance(d, int) for d in shape):
        return None
    return tuple(shape)


def dtype_of(node: Any) -> Optional[torch.dtype]:
    if not isinstance(node, fx.Node):
        return None
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return val.dtype
    meta = node.meta.get("tensor_meta")
    return getattr(meta, "dtype", None)


def module_of(gm: fx.GraphModule, node: fx.Node) -> Optional[nn.Module]:
    if node.op != "call_module":
        return None
    return gm.get_submodule(node.target)


def match_activation(gm: fx.GraphModule, node: fx.Node) -> Optional[tuple[fx.Node, str]]:
    """``(input, name)`` if ``node`` is a ReLU / exact (erf) GELU / SiLU, else None.

    GELU with ``approximate='tanh'`` is not the op's ``gelu`` and is not matched.
    """
    if node.op == "call_function":
        if node.target in _RELU_FNS:
            return _first_input(node), "relu"
        if node.target in _GELU_FNS and arg(node, 1, "approximate", "none") == "none":
            return _first_input(node), "gelu"
        if node.target in _SILU_FNS:
            return _first_input(node), "silu"
        return None
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return _first_input(node), "relu"
    module = module_of(gm, node)
    if isinstance(module, nn.ReLU):
        return _first_input(node), "relu"
    if isinstance(module, nn.GELU) and module.approximate == "none":
        return _first_input(node), "gelu"
    if isinstance(module, nn.SiLU):
        return _first_input(node), "silu"
    return None


def match_identity_dropout(gm: fx.GraphModule, node: fx.Node) -> Optional[fx.Node]:
    """The input of ``node`` if it is a dropout that is the identity (inference mode or
    ``p == 0``), else None.

    An ``nn.Dropout`` module counts when it is in eval mode at compile time: sparsefx
    compiles for inference, as BN folding does (train-mode graphs are never fused).
    """
    if node.op == "call_function" and node.target in _DROPOUT_FNS:
        p = arg(node, 1, "p", 0.5)
        if node.target is F.dropout:
            train = arg(node, 2, "training", True)
        else:   # aten.dropout / torch.dropout: (input, p, train), train required
            train = arg(node, 2, "train", True)
        if train is False or p == 0:
            return _first_input(node)
        return None
    module = module_of(gm, node)
    if isinstance(module, nn.Dropout) and (not module.training or module.p == 0):
        return _first_input(node)
    if isinstance(module, nn.Identity):
        return _first_input(node)
    return None


def match_add(node: fx.Node) -> Optional[tuple[Any, Any]]:
    """``(a, b)`` if ``node`` is ``a + b`` (alpha 1, not in place), else None."""
    if node.op == "call_function" and node.target in (operator.add, torch.add,
                                                      aten.add.Tensor):
        if arg(node, 2, "alpha", 1) != 1 or len(node.args) < 2:
            return None
        return node.args[0], node.args[1]
    if node.op == "call_method" and node.target == "add" and len(node.args) == 2 \
            and not node.kwargs:
        return node.args[0], node.args[1]
    return None


def match_layer_norm(gm: fx.GraphModule, node: fx.Node) -> Optional[dict[str, Any]]:
    """``{input, normalized_shape, weight, bias, eps}`` for a LayerNorm node (weight and
    bias as nodes, or ``"module:<path>.weight"`` strings for ``nn.LayerNorm``)."""
    if node.op == "call_function" and node.target in (F.layer_norm, aten.layer_norm.default):
        return {"input": _first_input(node), "normalized_shape": arg(node, 1, "normalized_shape"),
                "weight": arg(node, 2, "weight"), "bias": arg(node, 3, "bias"),
                "eps": arg(node, 4, "eps", 1e-5)}
    module = module_of(gm, node)
    if isinstance(module, nn.LayerNorm):
        return {"input": _first_input(node), "normalized_shape": module.normalized_shape,
                "weight": f"module:{node.target}.weight" if module.weight is not None else None,
                "bias": f"module:{node.target}.bias" if module.bias is not None else None,
                "eps": module.eps}
    return None


def _first_input(node: fx.Node) -> Any:
    return node.args[0] if node.args else next(iter(node.kwargs.values()), None)


def copy_meta(src: fx.Node, dst: fx.Node, keys=("val", "tensor_meta")) -> None:
    for key in keys:
        if key in src.meta:
            dst.meta[key] = src.meta[key]


def set_shape_meta(node: fx.Node, shape: tuple, dtype: torch.dtype,
                   like_val: Any = None) -> None:
    """Give ``node`` shape meta ``shape``: ``tensor_meta`` always, and ``val`` made from
    the fake tensor ``like_val`` when there is one (dropped when that tensor can no
    longer make new ones, e.g. outside its fake mode)."""
    from torch.fx.passes.shape_prop import _extract_tensor_metadata
    node.meta["tensor_meta"] = _extract_tensor_metadata(
        torch.empty(shape, dtype=dtype, device="meta"))
    if isinstance(like_val, torch.Tensor):
        try:
            node.meta["val"] = like_val.new_empty(shape)
        except Exception:   # a fake tensor outside its mode: keep tensor_meta only
            node.meta.pop("val", None)


def op_arg(node: fx.Node, name: str) -> Any:
    """An argument of a call to a schema'd op (``torch.ops.*``) by name, falling back to
    the schema default when the call leaves it out."""
    arguments = node.target._schema.arguments
    index = [a.name for a in arguments].index(name)
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, arguments[index].default_value)
