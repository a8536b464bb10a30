"""fold_attention_mask: drop attention masks that mask nothing, turn causal ones into
``is_causal=True``.

Why: Hugging Face models build their attention mask with shape-only arithmetic
(``arange``, comparisons, ``expand``) and, when the model is traced (``torch.export``,
``torch.compile``, CUDA-graph capture), they cannot check whether it masks anything, so
the captured graph hands SDPA a materialised all-visible (or causal) boolean mask. With
an explicit mask, CUDA SDPA cannot use its flash / cuDNN kernels and falls back to the
math path, which upcasts fp16 to fp32 (measured on an H200, BERT-base batch 32 × 128:
fp32 GEMMs, fp32 softmax and mask copies, ~2 ms of a ~2 ms forward). The mask is a
constant of the captured graph (its shape is fixed), so it can be evaluated once here.

What fires, per ``scaled_dot_product_attention`` node (``aten`` op or the torch
function):

* its ``attn_mask`` is computed from constants only (no graph input upstream, only
  deterministic ops) — a mask derived from a user's ``attention_mask`` input is never
  touched;
* the evaluated mask keeps everything (bool all ``True``, or float all ``0``): the mask
  argument becomes ``None``;
* or it is exactly causal (``q_len == kv_len``; bool ``tril`` or float ``0`` on and
  below the diagonal and ``-inf``/very negative above) and ``is_causal`` is false: the
  mask becomes ``None`` and ``is_causal=True`` (same result, the causal kernels).

Before: any (usually right after capture). After: no SDPA node has a constant mask that
masks nothing or is exactly causal; the now-unused mask nodes are left to
``clean_graph``. Idempotent: a second run finds no such mask.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx

from sparsefx.layers import get_attr_path
from sparsefx.passes.infra import PassContext, PassResult, Record

_SDPA_TARGETS = (torch.ops.aten.scaled_dot_product_attention.default,
                 F.scaled_dot_product_attention)
_MASK_INDEX = 3            # (query, key, value, attn_mask, dropout_p, is_causal, ...)
_CAUSAL_INDEX = 5
_MAX_MASK_ELEMENTS = 1 << 26     # evaluating bigger constant masks is not worth it


class FoldAttentionMask:
    name = "fold_attention_mask"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        records = []
        evaluated: dict[fx.Node, Optional[torch.Tensor]] = {}
        for node in list(gm.graph.nodes):
            if node.op != "call_function" or node.target not in _SDPA_TARGETS:
                continue
            mask = _get(node, "attn_mask", _MASK_INDEX)
            if not isinstance(mask, fx.Node):
                continue
            if mask not in evaluated:
                evaluated[mask] = _evaluate_constant(gm, mask)
            value = evaluated[mask]
            if value is None:
                records.append(Record("kept", node.name, {"reason": "mask depends on "
                                                          "inputs or is not evaluable"}))
                continue
            kind = _classify(value)
            if kind == "all_visible":
                _set(node, "attn_mask", _MASK_INDEX, None)
            elif kind == "causal" and not _get(node, "is_causal", _CAUSAL_INDEX):
                _set(node, "attn_mask", _MASK_INDEX, None)
                _set(node, "is_causal", _CAUSAL_INDEX, True)
            else:
                records.append(Record("kept", node.name, {"reason": "mask masks some "
                                                          "positions"}))
                continue
            records.append(Record("mask_folded", node.name, {"mask": mask.name,
                                                             "became": kind}))
        modified = any(r.action == "mask_folded" for r in records)
        if modified:
            gm.graph.lint()
            gm.recompile()
        return PassResult(gm, modified, records)


# --------------------------------------------------------------------------- arguments
def _get(node: fx.Node, name: str, index: int) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, False if name == "is_causal" else None)


def _set(node: fx.Node, name: str, index: int, value: Any) -> None:
    if len(node.args) > index:
        args = list(node.args)
        args[index] = value
        node.args = tuple(args)
    else:
        node.kwargs = {**node.kwargs, name: value}


# --------------------------------------------------------------------------- evaluation
def _evaluate_constant(gm: fx.GraphModule, mask: fx.Node) -> Optional[torch.Tensor]:
    """The mask's value if it depends on constants only (else ``None``)."""
    order = _constant_ancestors(mask)
    if order is None:
        return None
    env: dict[fx.Node, Any] = {}
    try:
        for node in order:
            if node.op == "get_attr":
                env[node] = get_attr_path(gm, node.target)
                continue
            args = fx.node.map_arg(node.args, env.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
            env[node] = node.target(*args, **kwargs)
    except Exception:      # noqa: BLE001 - anything odd: leave the mask alone
        return None
    value = env[mask]
    if not isinstance(value, torch.Tensor) or value.numel() > _MAX_MASK_ELEMENTS:
        return None
    return value


def _constant_ancestors(mask: fx.Node) -> Optional[list[fx.Node]]:
    """``mask`` and its ancestors in graph order, or ``None`` if any is an input or an
    op whose result is not a pure function of its arguments."""
    seen: set[fx.Node] = set()
    stack = [mask]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "get_attr":
            continue
        if node.op != "call_function" or not _is_pure(node.target):
            return None
        stack.extend(node.all_input_nodes)
    graph_order = {n: i for i, n in enumerate(mask.graph.nodes)}
    return sorted(seen, key=graph_order.__getitem__)


def _is_pure(target: Any) -> bool:
    if isinstance(target, torch._ops.OpOverload):
        schema = target._schema
        if schema.is_mutable or target.name().startswith(("aten::rand", "aten::bernoulli",
                                                          "aten::normal",
                                                          "aten::dropout")):
            return False
        return True
    # builtin operators and shape helpers from symbolic_trace graphs
    return getattr(target, "__module__", None) in ("_operator", "operator")


# --------------------------------------------------------------------------- classify
def _classify(mask: torch.Tensor) -> str:
    """'all_visible', 'causal' or 'partial'.

    Causal needs no query/key lengths from the graph: a mask whose last two dims are
    both ``n > 1`` only broadcasts against ``[..., n, n]`` scores, so ``q_len == kv_len
    == n`` wherever the op runs, and there ``is_causal=True`` means exactly
    ``tril(ones(n, n))``."""
    if mask.dtype == torch.bool:
        visible = mask
    elif mask.is_floating_point():
        if not torch.all(mask == 0) and not torch.all((mask == 0) | (mask <= _very_negative(mask))):
            return "partial"
        visible = mask == 0
    else:
        return "partial"
    if bool(visible.all()):
        return "all_visible"
    if visible.dim() < 2 or visible.shape[-1] != visible.shape[-2]:
        return "partial"
    n = visible.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool, device=visible.device).tril()
    if bool(torch.all(visible == causal)):
        return "causal"
    return "partial"


def _very_negative(mask: torch.Tensor) -> float:
    """Values at or below this mean 'masked' (HF uses dtype min; others use -inf)."""
    return torch.finfo(mask.dtype).min / 2
