"""restore_elements: the element-wise half of hybrid TEW sparsity (paper 002, §IV-A).

Why: TW alone removes whole rows/columns of tiles, sometimes with important weights in
them. TEW prunes ``sparsity + delta`` with TW (``prune_tiles`` does that) and then
restores the ``delta`` fraction of all prunable elements with the highest importance,
ranked globally over every layer, so the final sparsity is ``sparsity`` again.

Before: ``prune_tiles`` ran with ``ctx.config.delta > 0``. After: each prunable
``LayerInfo.ew_mask`` is a bool ``[N, K]`` of restored elements (disjoint from the TW
mask; all-False where none). Does nothing when ``delta == 0``. Graph unchanged.
"""
from __future__ import annotations

import torch
from torch import fx

from sparsefx.passes.infra import PassContext, PassResult, Record


class RestoreElements:
    name = "restore_elements"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        cfg = ctx.config
        layers = [info for info in ctx.prunable_layers() if info.layout is not None]
        if cfg.delta <= 0 or not layers or all(info.ew_mask is not None for info in layers):
            return PassResult(gm, False, [])
        total = sum(info.numel for info in layers)
        count = round(cfg.delta * total)
        tw_masks = [info.layout.mask() for info in layers]
        # Candidates are the TW-pruned elements; kept ones get -inf so they never win.
        candidates = torch.cat([
            torch.where(mask, torch.tensor(-torch.inf), info.importance.double()).flatten()
            for info, mask in zip(layers, tw_masks)])
        pruned_available = int(sum((~m).sum() for m in tw_masks))
        count = min(count, pruned_available)
        order = torch.sort(candidates, descending=True, stable=True).indices[:count]
        restored = torch.zeros(candidates.numel(), dtype=torch.bool)
        restored[order] = True
        records, offset = [], 0
        for info in layers:
            n, k = info.matrix_shape
            info.ew_mask = restored[offset: offset + n * k].view(n, k).clone()
            offset += n * k
            records.append(Record("restored", info.name, {
                "elements": int(info.ew_mask.sum()),
                "achieved_sparsity": info.achieved_sparsity()}))
        ctx.stats["restored_elements"] = count
        return PassResult(gm, False, records)
