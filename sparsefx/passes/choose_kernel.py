"""choose_kernel: time each tile layer's sparse kernel against dense cuBLAS, keep the faster.

Why: a tile layer is only worth running sparse where it beats cuBLAS at its real shape
on this GPU, which depends on M, K, N, G and the per-tile density profile — too many
factors to model reliably. :func:`sparsefx.runtime.cuda.dispatch.decide` measures the
candidate Triton configs and dense at the layer's shape and caches the decision (in
memory and on disk); the op then follows it on every call. This pass makes that happen
at compile time, with the example inputs' shapes, and reports the numbers per layer.

Before: ``substitute_ops`` ran (nodes call ``sparsefx::tile_linear``) and shape meta
(``node.meta["val"]`` of the input) is present. After: each such node carries
``node.meta["sparsefx.kernel"]`` (choice, sparse_ms, dense_ms, config); the graph is
unchanged. Without a GPU, triton, or shape meta the pass records why and does nothing.
Idempotent: decisions are cached, so a second run writes the same meta and reports
``modified=False``. Keeps no state of its own (the decision cache belongs to the
runtime, like a kernel cache).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import fx

from sparsefx.layers import get_attr_path
from sparsefx.passes.infra import LAYER_META, PassContext, PassResult, Record

KERNEL_META = "sparsefx.kernel"


class ChooseKernel:
    name = "choose_kernel"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        nodes = [n for n in gm.graph.nodes if _is_tile_linear(n)]
        if not nodes:
            return PassResult(gm, False, [])
        from sparsefx.runtime.cuda import register_cuda_kernels
        if not register_cuda_kernels():
            return PassResult(gm, False, [Record("kernel_choice_skipped", None,
                                                 {"reason": "no CUDA GPU or no triton"})])
        records, modified = [], False
        for node in nodes:
            meta, record = _choose(gm, node)
            records.append(record)
            if meta is not None and node.meta.get(KERNEL_META) != meta:
                node.meta[KERNEL_META] = meta
                modified = True
        return PassResult(gm, modified, records)


def _is_tile_linear(node: fx.Node) -> bool:
    return node.op == "call_function" and \
        node.target is torch.ops.sparsefx.tile_linear.default


def _layer_name(node: fx.Node) -> str:
    info = node.meta.get(LAYER_META)
    return getattr(info, "name", None) or node.name


def _input_meta(x_node: Any) -> Any:
    """Shape and dtype of the op's input: ``val`` (torch.export, fake tensors) or
    ``tensor_meta`` (symbolic_trace + ShapeProp); both have ``.shape``/``.dtype``."""
    if not isinstance(x_node, fx.Node):
        return None
    return x_node.meta.get("val", x_node.meta.get("tensor_meta"))


def _example_input(val: Any, values: torch.Tensor) -> Any:
    """Random data shaped like the op's input. A 2-D input that is a transposed view
    (``propagate_layout`` lets row-major ops read feature-major activations through
    ``x.t()``) keeps those strides: the kernels take a different path for it, and the
    decision must time that path. Otherwise just the shape (``decide`` draws it)."""
    shape = tuple(val.shape)
    stride = getattr(val, "stride", None)
    stride = stride() if callable(stride) else stride
    if len(shape) == 2 and stride is not None and tuple(stride) == (1, shape[0]) \
            and shape[1] != 1:
        return torch.randn(shape[1], shape[0], dtype=values.dtype, device=values.device).t()
    return shape


def _resolve(gm: fx.GraphModule, arg: Any) -> Any:
    if isinstance(arg, fx.Node) and arg.op == "get_attr":
        return get_attr_path(gm, arg.target)
    return arg


def _choose(gm: fx.GraphModule, node: fx.Node) -> tuple[Optional[dict], Record]:
    from sparsefx.runtime.cuda.dispatch import decide
    layer = _layer_name(node)
    x_node = node.args[0]
    val = _input_meta(x_node)
    values, row_idx, row_ptr, col_map, bias = (_resolve(gm, a) for a in node.args[1:6])
    out_features = node.args[6]
    activation = node.args[7] if len(node.args) > 7 else "none"
    feature_major = node.args[8] if len(node.args) > 8 else False
    if val is None:
        return None, Record("kernel_choice_skipped", layer, {"reason": "no shape meta"})
    if not isinstance(values, torch.Tensor) or not values.is_cuda:
        return None, Record("kernel_choice_skipped", layer,
                            {"reason": "packed weights are not on a CUDA device"})
    if val.dtype != values.dtype:
        return None, Record("kernel_choice_skipped", layer,
                            {"reason": f"input {val.dtype} vs weights {values.dtype}"})
    dec = decide(_example_input(val, values), values, row_idx, row_ptr, col_map, bias,
                 out_features, activation, feature_major, layer=layer)
    meta = {"choice": dec.choice, "sparse_ms": dec.sparse_ms, "dense_ms": dec.dense_ms,
            "config": None if dec.config is None else dec.config.to_dict()}
    return meta, Record("kernel_chosen", layer, {
        "choice": dec.choice, "sparse_ms": dec.sparse_ms, "dense_ms": dec.dense_ms,
        "speedup": dec.speedup})
