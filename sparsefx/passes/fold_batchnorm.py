"""fold_batchnorm: fold an inference-mode BatchNorm into the conv/linear before it.

Why: at inference ``BN(conv(x)) = conv'(x)`` with ``W' = W * s`` and
``b' = (b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)`` per output channel. The
folded weight is the one that runs, so importance must be scored on it (this pass runs
before ``find_prunable``), and the separate BN kernel disappears. Because BN scales
whole output channels, masking the *unfolded* weight zeroes exactly the elements the
folded one loses: ``sparsefx.prune`` (which masks a copy of the original model) still
matches ``sparsefx.compile``.

Folds when all hold:

* the producer is ``nn.Conv1d/2d/3d`` / ``nn.Linear`` (``call_module``) or
  ``F.conv*d`` / ``aten.conv*d`` / ``F.linear`` / ``aten.linear`` on a parameter,
  and its weight (and bias) are used by that node only;
* the BN is in inference mode: an ``nn.BatchNorm*d`` module with ``training=False``
  and running statistics, ``F.batch_norm`` / ``aten.batch_norm`` with
  ``training=False``, or ``aten._native_batch_norm_legit_no_training`` (whose only
  used output is item 0);
* the producer's output has no user but the BN;
* the BN normalises the producer's output-feature axis: always for convs (axis 1);
  for linear only when the output is 2-D ``[B, N]`` (known from shape meta).

Before: a captured graph (``find_prunable`` not yet run). After: each folded BN node is
gone, its users read the conv/linear node, whose weight/bias now hold the folded values
(a bias parameter is created when the layer had none). Idempotent: nothing to fold the
second time. Frees the BN module / buffers once unused.
"""
from __future__ import annotations

import copy
import operator
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from sparsefx.layers import get_attr_path
from sparsefx.passes._match import arg, shape_of
from sparsefx.passes.infra import PassContext, PassResult, Record

aten = torch.ops.aten
_CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONV_FNS = {F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d,
             aten.conv1d.default, aten.conv2d.default, aten.conv3d.default}
_LINEAR_FNS = {F.linear, torch._C._nn.linear, aten.linear.default}
_BN_NO_TRAINING = aten._native_batch_norm_legit_no_training.default


class FoldBatchnorm:
    name = "fold_batchnorm"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        records = []
        stale: set[str] = set()      # BN tensors read through get_attr (aten graphs)
        for node in list(gm.graph.nodes):
            bn = _match_bn(gm, node)
            if bn is None:
                continue
            producer = node.args[0] if node.args else None
            target = _fold_target(gm, producer) if isinstance(producer, fx.Node) else None
            reason = _why_not(gm, node, producer, target, bn)
            if reason:
                records.append(Record("not folded", str(node.target), {"reason": reason}))
                continue
            _fold(gm, producer, target, bn)
            stale |= {a.target for a in node.all_input_nodes if a.op == "get_attr"}
            _replace_bn(gm, node, producer)
            records.append(Record("folded", target["name"], {"batchnorm": bn["name"]}))
        folded = any(r.action == "folded" for r in records)
        if folded:
            gm.graph.eliminate_dead_code()
            _drop_unused_attrs(gm, stale)
            gm.delete_all_unused_submodules()
            gm.recompile()
        return PassResult(gm, folded, records)


# --------------------------------------------------------------------------- matching
def _match_bn(gm: fx.GraphModule, node: fx.Node) -> Optional[dict[str, Any]]:
    """The BN's tensors and settings, or None if ``node`` is not a BatchNorm."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if not isinstance(module, _BN_MODULES):
            return None
        return {"name": node.target, "training": module.training or
                module.running_mean is None, "eps": module.eps,
                "weight": module.weight, "bias": module.bias,
                "mean": module.running_mean, "var": module.running_var}
    if node.op != "call_function":
        return None
    if node.target is _BN_NO_TRAINING:
        names = ("weight", "bias", "running_mean", "running_var")
        tensors = [arg(node, i + 1, n) for i, n in enumerate(names)]
        return _bn_from_nodes(gm, node, tensors, False, arg(node, 6, "eps"))
    if node.target is aten.batch_norm.default:
        tensors = [arg(node, i, n) for i, n in
                   ((1, "weight"), (2, "bias"), (3, "running_mean"), (4, "running_var"))]
        return _bn_from_nodes(gm, node, tensors, arg(node, 5, "training"), arg(node, 7, "eps"))
    if node.target is F.batch_norm:   # (input, running_mean, running_var, weight, bias, ...)
        tensors = [arg(node, 3, "weight"), arg(node, 4, "bias"),
                   arg(node, 1, "running_mean"), arg(node, 2, "running_var")]
        return _bn_from_nodes(gm, node, tensors, arg(node, 5, "training", False),
                              arg(node, 7, "eps", 1e-5))
    return None


def _bn_from_nodes(gm, node, tensors, training, eps) -> Optional[dict[str, Any]]:
    values = []
    for t in tensors:
        if t is None:
            values.append(None)
        elif isinstance(t, fx.Node) and t.op == "get_attr":
            values.append(get_attr_path(gm, t.target))
        else:
            return None   # statistics computed in the graph: not a foldable BN
    weight, bias, mean, var = values
    return {"name": node.name, "training": training is not False or mean is None,
            "eps": eps, "weight": weight, "bias": bias, "mean": mean, "var": var}


def _fold_target(gm: fx.GraphModule, node: fx.Node) -> Optional[dict[str, Any]]:
    """Where the producer keeps its weight and bias, or None if it is no conv/linear."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, _CONV_MODULES) or isinstance(module, nn.Linear):
            return {"name": node.target, "module": module, "kind":
                    "linear" if isinstance(module, nn.Linear) else "conv"}
        return None
    if node.op == "call_function" and (node.target in _CONV_FNS or node.target in _LINEAR_FNS):
        weight, bias = arg(node, 1, "weight"), arg(node, 2, "bias")
        if not (isinstance(weight, fx.Node) and weight.op == "get_attr"):
            return None
        if bias is not None and not (isinstance(bias, fx.Node) and bias.op == "get_attr"):
            return None
        name = weight.target.rsplit(".", 1)[0] if "." in weight.target else weight.target
        return {"name": name, "weight_node": weight, "bias_node": bias, "kind":
                "linear" if node.target in _LINEAR_FNS else "conv"}
    return None


def _why_not(gm, bn_node, producer, target, bn) -> str:
    if target is None:
        return "not after a conv/linear"
    if bn["training"]:
        return "BatchNorm in training mode (or without running statistics)"
    if len(producer.users) != 1:
        return "the conv/linear output has other users"
    if bn_node.target is _BN_NO_TRAINING and any(
            not (u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0)
            for u in bn_node.users):
        return "BatchNorm statistics outputs are used"
    if not _weights_private(gm, producer, target):
        return "the conv/linear weights are used elsewhere"
    if target["kind"] == "linear":
        shape = shape_of(producer)
        if shape is None or len(shape) != 2:
            return "linear output is not 2-D [B, N] (BN would not normalise its features)"
    else:
        shape = shape_of(producer)
        if shape is None and not _is_conv2d_bn2d(gm, bn_node, target):
            # BatchNorm1d accepts 2-D input: an unbatched Conv1d output [C, L] would be
            # normalised over L. Without shape meta only Conv2d -> BatchNorm2d is safe.
            return "no shape meta to check the channel axis"
        if shape is not None and len(shape) < 3:
            return "unbatched conv output (BN would not normalise its channels)"
    return ""


def _is_conv2d_bn2d(gm, bn_node, target) -> bool:
    return (isinstance(target.get("module"), nn.Conv2d) and bn_node.op == "call_module"
            and isinstance(gm.get_submodule(bn_node.target), nn.BatchNorm2d))


def _weights_private(gm, producer, target) -> bool:
    if "module" in target:
        calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == target["name"]]
        attrs = [n for n in gm.graph.nodes if n.op == "get_attr"
                 and n.target.startswith(target["name"] + ".")]
        return len(calls) == 1 and not attrs
    nodes = [target["weight_node"], target["bias_node"]]
    return all(n is None or set(n.users) == {producer} for n in nodes)


# --------------------------------------------------------------------------- rewrite
def _fold(gm: fx.GraphModule, producer: fx.Node, target: dict, bn: dict) -> None:
    """Give the producer new parameters holding the folded weight and bias (computed in
    float64, stored in the weight's dtype).

    Never writes into the existing tensors: a traced graph shares its leaf modules and
    parameters with the model it was traced from, which must stay unchanged.
    """
    if "module" in target:
        target["module"] = _private_module(gm, target["name"], target["module"])
    weight = target["module"].weight if "module" in target else \
        get_attr_path(gm, target["weight_node"].target)
    bias = (target["module"].bias if "module" in target else
            (get_attr_path(gm, target["bias_node"].target) if target["bias_node"] else None))
    mean, var = bn["mean"].double(), bn["var"].double()
    gamma = bn["weight"].double() if bn["weight"] is not None else torch.ones_like(mean)
    beta = bn["bias"].double() if bn["bias"] is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn["eps"])
    b = bias.double() if bias is not None else torch.zeros_like(mean)
    new_w = weight.detach().double() * scale.view(-1, *([1] * (weight.dim() - 1)))
    new_b = (b.detach() - mean) * scale + beta
    grad = weight.requires_grad
    new_weight = nn.Parameter(new_w.to(weight.dtype), requires_grad=grad)
    new_bias = nn.Parameter(new_b.to(weight.dtype), requires_grad=grad)
    if "module" in target:
        target["module"].weight = new_weight
        target["module"].bias = new_bias
        return
    _set_attr(gm, target["weight_node"].target, new_weight)
    if bias is not None:
        _set_attr(gm, target["bias_node"].target, new_bias)
    else:
        _add_bias(gm, producer, target, new_bias)


def _private_module(gm: fx.GraphModule, path: str, module: nn.Module) -> nn.Module:
    """A copy of ``module`` installed at ``path`` in ``gm`` only (the parents of a traced
    graph's leaves are the graph's own containers, the leaves are the model's)."""
    clone = copy.deepcopy(module)
    _set_attr(gm, path, clone)
    return clone


def _set_attr(gm: fx.GraphModule, path: str, value) -> None:
    owner_path, _, name = path.rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    if isinstance(value, nn.Parameter) and name in owner._parameters:
        owner._parameters[name] = value
    else:
        setattr(owner, name, value)


def _add_bias(gm, producer, target, param: nn.Parameter) -> None:
    owner_path, _, _ = target["weight_node"].target.rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    name = "bias"
    while hasattr(owner, name) and getattr(owner, name) is not None:
        name = "_" + name
    if hasattr(owner, name):
        delattr(owner, name)
    owner.register_parameter(name, param)
    path = f"{owner_path}.{name}" if owner_path else name
    with gm.graph.inserting_after(target["weight_node"]):
        node = gm.graph.get_attr(path)
    args = list(producer.args)
    while len(args) < 3:
        args.append(None)
    args[2] = node
    producer.args = tuple(args)
    producer.kwargs = {k: v for k, v in producer.kwargs.items() if k != "bias"}


def _drop_unused_attrs(gm: fx.GraphModule, paths: set[str]) -> None:
    """Delete folded BN tensors no node reads any more, so they leave ``state_dict()``."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for path in paths - used:
        owner_path, _, name = path.rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        if hasattr(owner, name):
            delattr(owner, name)


def _replace_bn(gm: fx.GraphModule, bn_node: fx.Node, producer: fx.Node) -> None:
    if bn_node.target is _BN_NO_TRAINING:
        for user in list(bn_node.users):
            user.replace_all_uses_with(producer)
            gm.graph.erase_node(user)
    else:
        bn_node.replace_all_uses_with(producer)
    gm.graph.erase_node(bn_node)
