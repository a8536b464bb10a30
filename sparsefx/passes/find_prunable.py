"""find_prunable: mark every matmul with a weight parameter that the pattern can prune.

Why: every later pass works on "layers", not on nodes; this pass is the one place that
knows which graph shapes are a linear layer in disguise.

Recognised (as traced by ``symbolic_trace`` or ``torch.export``):

* ``nn.Linear`` modules, ``F.linear`` / ``aten.linear`` on a parameter;
* ``nn.Conv1d`` / ``nn.Conv2d`` modules and ``F.conv1d/2d`` / ``aten.conv1d/2d`` on a
  parameter, viewed as the ``[C_out, C_in * k]`` GEMM of im2col;
* ``torch.addmm`` / ``aten.addmm`` with a parameter as the second operand — HF's
  ``Conv1D`` (GPT-2), whose weight is stored transposed ``[in, out]``.

Skipped, with the reason in the log: grouped/depthwise convs, convs with a padding mode
other than zeros, weights shared by several layers (tied), layers the user excluded,
and layers too small for the pattern (fewer than ``G`` output features: not even one
full tile).

Before: a captured graph. After: each candidate node has ``node.meta["sparsefx.layer"]``
(a :class:`~sparsefx.layers.LayerInfo`) and ``ctx.layers`` lists them in graph order.
The graph itself is unchanged.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from sparsefx.layers import LayerInfo, get_attr_path
from sparsefx.passes.infra import LAYER_META, PassContext, PassResult, Record

aten = torch.ops.aten
_LINEAR_FUNCTIONS = {F.linear, torch._C._nn.linear, aten.linear.default}
_CONV_FUNCTIONS = {F.conv1d: 1, F.conv2d: 2, torch.conv1d: 1, torch.conv2d: 2,
                   aten.conv1d.default: 1, aten.conv2d.default: 2}
_ADDMM_FUNCTIONS = {torch.addmm, aten.addmm.default}
_CONV_ARG_NAMES = ("stride", "padding", "dilation", "groups")


class FindPrunable:
    name = "find_prunable"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        records: list[Record] = []
        shared = _shared_parameter_names(ctx.model if ctx.model is not None else gm)
        modified = False
        for node in gm.graph.nodes:
            if LAYER_META in node.meta:
                continue
            info = _match_layer(gm, node)
            if info is None:
                continue
            _decide_prunable(info, ctx, shared)
            node.meta[LAYER_META] = info
            ctx.layers[info.name] = info
            modified = True
            numbers = {"kind": info.kind, "weight_shape": list(info.weight_shape)}
            if info.prunable:
                records.append(Record("found", info.name, numbers))
            else:
                records.append(Record("skipped", info.name,
                                      {**numbers, "reason": info.skip_reason}))
        if not modified:  # second run: re-index what an earlier run marked
            for node in gm.graph.nodes:
                if LAYER_META in node.meta:
                    ctx.layers.setdefault(node.meta[LAYER_META].name, node.meta[LAYER_META])
        return PassResult(gm, modified, records)


# --------------------------------------------------------------------------- matching
def _match_layer(gm: fx.GraphModule, node: fx.Node) -> Optional[LayerInfo]:
    if node.op == "call_module":
        return _match_module(gm, node)
    if node.op == "call_function":
        return _match_function(gm, node)
    return None


def _match_module(gm: fx.GraphModule, node: fx.Node) -> Optional[LayerInfo]:
    module = gm.get_submodule(node.target)
    bias = f"{node.target}.bias" if getattr(module, "bias", None) is not None else None
    if isinstance(module, nn.Linear):
        return _info(node.target, "linear", node, f"{node.target}.weight", bias, module.weight)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        kind = "conv1d" if isinstance(module, nn.Conv1d) else "conv2d"
        info = _info(node.target, kind, node, f"{node.target}.weight", bias, module.weight)
        info.conv_params = {"stride": module.stride, "padding": module.padding,
                            "dilation": module.dilation, "groups": module.groups,
                            "padding_mode": module.padding_mode}
        return info
    return None


def _match_function(gm: fx.GraphModule, node: fx.Node) -> Optional[LayerInfo]:
    target = node.target
    if target in _LINEAR_FUNCTIONS:
        weight, bias = _arg(node, 1, "weight"), _arg(node, 2, "bias")
        return _info_from_attrs(gm, node, "linear", weight, bias)
    if target in _CONV_FUNCTIONS:
        weight, bias = _arg(node, 1, "weight"), _arg(node, 2, "bias")
        info = _info_from_attrs(gm, node, f"conv{_CONV_FUNCTIONS[target]}d", weight, bias)
        if info is not None:
            info.conv_params = _conv_params(node, _CONV_FUNCTIONS[target])
        return info
    if target in _ADDMM_FUNCTIONS:
        if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
            return None
        bias, weight = _arg(node, 0, "input"), _arg(node, 2, "mat2")
        return _info_from_attrs(gm, node, "addmm", weight, bias)
    return None


def _arg(node: fx.Node, index: int, name: str) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name)


def _info_from_attrs(gm: fx.GraphModule, node: fx.Node, kind: str, weight: Any,
                     bias: Any) -> Optional[LayerInfo]:
    if not (isinstance(weight, fx.Node) and weight.op == "get_attr"):
        return None
    if bias is not None and not (isinstance(bias, fx.Node) and bias.op == "get_attr"):
        return None
    param = get_attr_path(gm, weight.target)
    if not isinstance(param, torch.Tensor) or param.dim() < 2:
        return None
    name = weight.target[: -len(".weight")] if weight.target.endswith(".weight") else weight.target
    return _info(name, kind, node, weight.target, bias.target if bias is not None else None,
                 param)


def _info(name: str, kind: str, node: fx.Node, weight_attr: str, bias_attr: Optional[str],
          weight: torch.Tensor) -> LayerInfo:
    return LayerInfo(name=name, kind=kind, node_name=node.name, weight_attr=weight_attr,
                     bias_attr=bias_attr, weight_shape=tuple(weight.shape))


def _conv_params(node: fx.Node, dims: int) -> dict[str, Any]:
    defaults = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    params = {}
    for offset, key in enumerate(_CONV_ARG_NAMES):
        value = node.args[3 + offset] if len(node.args) > 3 + offset else \
            node.kwargs.get(key, defaults[key])
        if key != "groups" and not isinstance(value, str):
            value = tuple(value) if isinstance(value, (list, tuple)) else (value,) * dims
        params[key] = value
    params["padding_mode"] = "zeros"
    return params


# --------------------------------------------------------------------------- decisions
def _decide_prunable(info: LayerInfo, ctx: PassContext, shared: dict[str, list[str]]) -> None:
    cfg = ctx.config
    n, _ = info.matrix_shape
    reason = ""
    if info.conv_params.get("groups", 1) != 1:
        reason = f"grouped/depthwise conv (groups={info.conv_params['groups']})"
    elif info.conv_params.get("padding_mode", "zeros") != "zeros":
        reason = f"padding_mode={info.conv_params['padding_mode']!r} (only zeros is supported)"
    elif isinstance(info.conv_params.get("padding"), str):
        reason = f"padding={info.conv_params['padding']!r} (give explicit padding)"
    elif info.weight_attr in shared:
        reason = f"weight is shared with {', '.join(shared[info.weight_attr])} (tied)"
    elif cfg.is_excluded(info.name, info.weight_shape):
        reason = "excluded by exclude="
    elif n < cfg.G:
        reason = f"too small for the pattern: {n} output features < G={cfg.G}"
    if reason:
        info.prunable, info.skip_reason = False, reason


def _shared_parameter_names(model: nn.Module) -> dict[str, list[str]]:
    """For each parameter reachable under several names, the other names."""
    by_id: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(param), []).append(name)
    shared = {}
    for names in by_id.values():
        if len(names) > 1:
            for name in names:
                shared[name] = [other for other in names if other != name]
    return shared
