"""prune_tiles: rank pruning units of all layers at once and build each layer's TW layout.

Why: tile-wise sparsity (paper 002, §IV–V, Alg. 1) keeps accuracy by letting layers and
tiles end with *uneven* sparsity; that needs one global ranking over every layer's units,
with scores normalised by unit size so that big and small units compare fairly.

Two stages, both ranked globally (ascending normalised score, ties broken by graph
order so masks are deterministic):

1. **column pruning** — unit: one output feature (a ``K×1`` column of the paper's ``B``),
   score: mean importance over its ``K`` weights. Stage 1 removes up to
   ``column_share`` of the element budget. With ``apriori=True`` the scores are tuned
   first (Alg. 2): element-wise pruning at the target marks the columns it would remove
   entirely (score set to 0, pruned first) and those it keeps entirely (score set to
   infinity, never column-pruned).
2. **row pruning** — kept output features are grouped into tiles of ``G`` consecutive
   features (the last, edge tile may be narrower); unit: one input feature ``k`` of one
   tile (``1×G``), score: mean importance over the tile's features at ``k``. Stage 2
   prunes until the overall budget is met: the pruned element count ends within half a
   unit of ``round(target * total)``.

Per-layer bounds: ``min_density`` is a floor no unit may cross; ``max_density`` forces
each layer to prune at least ``1 - max_density`` of its elements (its own lowest units)
before the global ranking runs. TEW (``delta > 0``) prunes ``sparsity + delta`` here;
``restore_elements`` then restores ``delta``.

Before: ``score_importance`` ran. After: each prunable ``LayerInfo.layout`` is a
:class:`~sparsefx.patterns.tile.TileLayout`; ``ctx.stats`` holds the overall numbers.
The graph is unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, fx

from sparsefx.layers import LayerInfo
from sparsefx.patterns.tile import TileLayout
from sparsefx.passes.infra import PassContext, PassResult, Record


@dataclass
class Units:
    """A flat list of pruning units over several layers."""

    score: Tensor   # float64 [U], normalised (mean importance per element)
    size: Tensor    # int64 [U], elements in the unit
    layer: Tensor   # int64 [U], index into the layer list
    index: Tensor   # int64 [U], unit index within its layer
    offsets: list[int]  # units of layer i are [offsets[i], offsets[i+1]) (layer order)

    def of_layer(self, i: int) -> slice:
        return slice(self.offsets[i], self.offsets[i + 1])


class PruneTiles:
    name = "prune_tiles"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        layers = [info for info in ctx.prunable_layers() if info.layout is None]
        if not layers:
            return PassResult(gm, False, [])
        cfg = ctx.config
        sizes = torch.tensor([info.numel for info in layers], dtype=torch.int64)
        total = int(sizes.sum())
        budget = round(cfg.tw_sparsity * total)
        min_kept = torch.tensor([math.ceil(cfg.min_density * s) for s in sizes.tolist()])
        max_kept = torch.tensor([math.floor(cfg.max_density * s) for s in sizes.tolist()])
        capacity = sizes - min_kept                                 # most each may lose

        col_units = column_units(layers, apriori_target=cfg.tw_sparsity if cfg.apriori else None)
        col_pruned = select_units(col_units, int(cfg.column_share * budget), capacity,
                                  len(layers), allow_overshoot=False)
        layouts = [_column_layout(info, cfg.G, col_pruned[col_units.of_layer(i)])
                   for i, info in enumerate(layers)]
        lost = torch.tensor([info.numel - len(l.kept_cols) * info.matrix_shape[1]
                             for info, l in zip(layers, layouts)], dtype=torch.int64)

        rows = row_units(layers, layouts)
        forced = force_minimum(rows, (sizes - max_kept - lost).clamp(min=0), len(layers))
        lost += _per_layer(rows, forced, len(layers))
        row_pruned = forced | select_units(
            rows, budget - int(lost.sum()), capacity - lost, len(layers),
            allow_overshoot=True, already=forced)
        for i, layout in enumerate(layouts):
            mine = rows.of_layer(i)
            _apply_row_pruning(layout, rows.index[mine][row_pruned[mine]])

        records = []
        achieved_total = 0
        for info, layout in zip(layers, layouts):
            info.layout = layout
            kept = layout.kept_elements()
            achieved_total += info.numel - kept
            records.append(Record("pruned", info.name, {
                "achieved_sparsity": 1 - kept / info.numel,
                "kept_out_features": int(layout.kept_cols.numel()),
                "tiles": layout.num_tiles}))
        ctx.stats.update({"target_sparsity": cfg.sparsity, "tw_sparsity": cfg.tw_sparsity,
                          "prunable_elements": total,
                          "tw_achieved_sparsity": achieved_total / max(total, 1)})
        return PassResult(gm, False, records)


# --------------------------------------------------------------------------- units
def column_units(layers: list[LayerInfo], apriori_target: float | None = None) -> Units:
    """One unit per output feature of every layer, scored by its mean importance."""
    scores = [info.importance.mean(dim=1, dtype=torch.float64) for info in layers]
    if apriori_target is not None:
        scores = apriori_tune(layers, scores, apriori_target)
    sizes = [torch.full((info.matrix_shape[0],), info.matrix_shape[1], dtype=torch.int64)
             for info in layers]
    return _concat(scores, sizes)


def apriori_tune(layers: list[LayerInfo], scores: list[Tensor], target: float) -> list[Tensor]:
    """Alg. 2: columns that element-wise pruning at ``target`` removes entirely get score
    0 (pruned first); columns it keeps entirely get +inf (never column-pruned)."""
    flat = torch.cat([info.importance.flatten() for info in layers])
    count = round(target * flat.numel())
    if count == 0:
        return scores
    threshold = torch.kthvalue(flat, count).values
    tuned = []
    for info, score in zip(layers, scores):
        ew_pruned = info.importance <= threshold
        score = score.clone()
        score[ew_pruned.all(dim=1)] = 0.0
        score[~ew_pruned.any(dim=1)] = math.inf
        tuned.append(score)
    return tuned


def row_units(layers: list[LayerInfo], layouts: list[TileLayout]) -> Units:
    """One unit per (tile, input feature) of every layer, scored by mean importance."""
    scores, sizes = [], []
    for info, layout in zip(layers, layouts):
        kept = info.importance[layout.kept_cols]                      # [N_kept, K]
        k = kept.shape[1]
        tile_of_col = torch.arange(kept.shape[0]) // layout.G
        tile_sum = kept.new_zeros(layout.num_tiles, k).index_add_(0, tile_of_col, kept)
        widths = layout.tile_widths()
        scores.append((tile_sum.double() / widths[:, None].double()).flatten())
        sizes.append(widths[:, None].expand(-1, k).flatten())
    return _concat(scores, sizes)


def _concat(scores: list[Tensor], sizes: list[Tensor]) -> Units:
    layer = torch.cat([torch.full((s.numel(),), i, dtype=torch.int64)
                       for i, s in enumerate(scores)]) if scores else torch.zeros(0, dtype=torch.int64)
    index = torch.cat([torch.arange(s.numel()) for s in scores]) if scores else layer
    offsets = [0]
    for s in scores:
        offsets.append(offsets[-1] + s.numel())
    return Units(torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64),
                 torch.cat(sizes) if sizes else layer, layer, index, offsets)


# --------------------------------------------------------------------------- selection
def select_units(units: Units, budget: int, capacity: Tensor, num_layers: int, *,
                 allow_overshoot: bool, already: Tensor | None = None) -> Tensor:
    """Greedy global selection in ascending score order (stable: ties keep graph order).

    Picks units while the pruned element count stays within ``budget``; with
    ``allow_overshoot`` the first unit that would cross the budget is still taken when
    that lands closer to it. No layer loses more than its ``capacity``. Units in
    ``already`` are neither chosen again nor counted (the caller counted them).
    """
    chosen = torch.zeros(units.score.numel(), dtype=torch.bool)
    if budget <= 0 or units.score.numel() == 0:
        return chosen
    order = torch.sort(units.score, stable=True).indices
    if already is not None:
        order = order[~already[order]]
    sizes = units.size[order]
    cumulative = torch.cumsum(sizes, dim=0)
    prefix = int((cumulative <= budget).sum())
    take = order[:prefix]
    if allow_overshoot and prefix < order.numel():
        below = int(cumulative[prefix - 1]) if prefix else 0
        if int(cumulative[prefix]) - budget <= budget - below:
            take = order[: prefix + 1]
    chosen[take] = True
    if (_per_layer(units, chosen, num_layers) <= capacity).all():
        return chosen
    return _select_with_capacity(units, order, budget, capacity, allow_overshoot)


def _select_with_capacity(units: Units, order: Tensor, budget: int, capacity: Tensor,
                          allow_overshoot: bool) -> Tensor:
    """Sequential version of :func:`select_units` used when a layer bound binds."""
    chosen = torch.zeros(units.score.numel(), dtype=torch.bool)
    remaining = capacity.clone().tolist()
    sizes, layer_of = units.size.tolist(), units.layer.tolist()
    pruned = 0
    for u in order.tolist():
        if pruned >= budget:
            break
        size, layer = sizes[u], layer_of[u]
        if size > remaining[layer]:
            continue
        if pruned + size > budget and not (allow_overshoot and
                                            pruned + size - budget <= budget - pruned):
            continue
        chosen[u] = True
        pruned += size
        remaining[layer] -= size
    return chosen


def force_minimum(units: Units, required: Tensor, num_layers: int) -> Tensor:
    """For each layer, its own lowest-scored units until ``required[layer]`` elements."""
    chosen = torch.zeros(units.score.numel(), dtype=torch.bool)
    for layer in torch.nonzero(required > 0).flatten().tolist():
        mine = torch.arange(units.offsets[layer], units.offsets[layer + 1])
        order = mine[torch.sort(units.score[mine], stable=True).indices]
        cumulative = torch.cumsum(units.size[order], dim=0)
        count = int((cumulative < int(required[layer])).sum()) + 1
        chosen[order[:count]] = True
    return chosen


def _per_layer(units: Units, chosen: Tensor, num_layers: int) -> Tensor:
    return torch.zeros(num_layers, dtype=torch.int64).index_add_(
        0, units.layer[chosen], units.size[chosen])


# --------------------------------------------------------------------------- layouts
def _column_layout(info: LayerInfo, G: int, pruned: Tensor) -> TileLayout:
    """``pruned``: bool per output feature of this layer (its column units, in order)."""
    n, k = info.matrix_shape
    kept_cols = torch.nonzero(~pruned).flatten()
    num_tiles = -(-kept_cols.numel() // G)
    return TileLayout(n, k, G, kept_cols, torch.ones(num_tiles, k, dtype=torch.bool))


def _apply_row_pruning(layout: TileLayout, pruned_index: Tensor) -> None:
    """Clear the pruned (tile, k) units; ``index = tile * K + k``."""
    layout.tile_keep.view(-1)[pruned_index] = False
