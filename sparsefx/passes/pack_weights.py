"""pack_weights: store each pruned layer's weight in the TW packed format on the module.

Why: the rewritten graph must read packed tensors through ``get_attr`` so they are part
of ``state_dict()`` and move with the module; packing once here keeps the substitution
pass purely structural.

Before: ``prune_tiles`` (and ``restore_elements`` for TEW) ran. After: for each layer
that lost at least one element, ``gm.sparsefx_packed.<layer>`` is a
:class:`~sparsefx.runtime.packed.PackedTileWeights` holding the packed TW weight, the
TEW elements in CSR (when any) and a copy of the bias; ``LayerInfo.packed_path`` names
it. Layers with nothing pruned stay dense. The dense weight is still in the graph.
"""
from __future__ import annotations

import re

from torch import fx, nn

from sparsefx.layers import get_attr_path, weight_to_matrix
from sparsefx.patterns.tile import pack
from sparsefx.passes.infra import PassContext, PassResult, Record
from sparsefx.runtime.packed import CONTAINER, PackedTileWeights, dense_to_csr


class PackWeights:
    name = "pack_weights"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        if not hasattr(gm, CONTAINER):
            gm.add_submodule(CONTAINER, nn.Module())
        container = getattr(gm, CONTAINER)
        records = []
        for info in ctx.prunable_layers():
            if info.layout is None or getattr(info, "packed_path", None):
                continue
            if info.achieved_sparsity() == 0.0:
                info.op = "dense (nothing pruned)"
                continue
            matrix = weight_to_matrix(get_attr_path(gm, info.weight_attr).detach(), info.kind)
            bias = get_attr_path(gm, info.bias_attr) if info.bias_attr else None
            ew = None
            if info.ew_mask is not None and info.ew_mask.any():
                ew = dense_to_csr(matrix, info.ew_mask.to(matrix.device))
            packed = pack(matrix, info.layout)
            child = _unique_child_name(container, info.name)
            container.add_module(child, PackedTileWeights(packed, bias, ew))
            info.packed_path = f"{CONTAINER}.{child}"
            records.append(Record("packed", info.name, {
                "path": info.packed_path, "kept_rows": int(packed.values.shape[0]),
                "tiles": int(packed.row_ptr.numel() - 1),
                "ew_elements": 0 if ew is None else int(ew[2].numel())}))
        return PassResult(gm, bool(records), records)


def _unique_child_name(container: nn.Module, layer_name: str) -> str:
    base = re.sub(r"\W", "_", layer_name) or "layer"
    name, suffix = base, 1
    while hasattr(container, name):
        suffix += 1
        name = f"{base}_{suffix}"
    return name
