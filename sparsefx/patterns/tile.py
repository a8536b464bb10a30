"""Tile-wise (TW) sparsity: layout, masks and the packed format.

Paper 002 (tile-wise sparsity) writes a linear layer as ``C[M, N] = A[M, K] @ B[K, N]``.
sparsefx keeps PyTorch's convention instead: the weight is ``W[N, K]`` (out × in), so
the paper's *column* of ``B`` (a ``K×1`` unit) is one output feature, a row of ``W``,
and the paper's *row* inside a tile (a ``1×G`` unit) is one input feature ``k`` shared
by the ``G`` output features of that tile.

A TW pattern is fully described by a :class:`TileLayout`:

* ``kept_cols``: the output features that survive column pruning, ascending;
* tiles: consecutive groups of ``G`` kept output features (the last, *edge* tile holds
  ``len(kept_cols) % G`` features when that is not zero);
* ``tile_keep[t, k]``: whether input feature ``k`` is kept for tile ``t``.

Packed format (:class:`TilePacked`), the storage every runtime op reads
-------------------------------------------------------------------------
``values``   float ``[R, G]``   the kept rows of every tile, tile after tile; row ``r``
                                holds ``W[col_map[t*G + j], row_idx[r]]`` in column
                                ``j``. Edge tiles are zero-padded to ``G`` columns, so
                                every tile is one dense, contiguous ``[k_t, G]`` block.
``row_idx``  int32 ``[R]``      input feature of each packed row (ascending per tile).
``row_ptr``  int32 ``[T + 1]``  tile ``t`` owns packed rows ``row_ptr[t]:row_ptr[t+1]``;
                                ``k_t = row_ptr[t+1] - row_ptr[t]`` may be 0 (empty tile).
``col_map``  int32 ``[N_kept]`` output feature of tile column ``j`` of tile ``t`` is
                                ``col_map[t*G + j]``.
``out_features`` / ``in_features``: the dense ``N`` and ``K``.

Output features not in ``col_map`` receive only the bias (then the activation).
``unpack(pack(W, layout)) == W * layout.mask()`` exactly, for any ``W``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TileLayout:
    """Which output features and, per tile, which input features a layer keeps."""

    out_features: int
    in_features: int
    G: int
    kept_cols: Tensor  # int64 [N_kept], ascending
    tile_keep: Tensor  # bool [T, K], T = ceil(N_kept / G)

    @property
    def num_tiles(self) -> int:
        return int(self.tile_keep.shape[0])

    def tile_widths(self) -> Tensor:
        """Number of output features in each tile (``G`` except the edge tile)."""
        n_kept = int(self.kept_cols.numel())
        widths = torch.full((self.num_tiles,), self.G, dtype=torch.int64)
        if n_kept % self.G:
            widths[-1] = n_kept % self.G
        return widths

    def mask(self) -> Tensor:
        """The dense boolean mask ``[N, K]`` this layout keeps."""
        mask = torch.zeros(self.out_features, self.in_features, dtype=torch.bool)
        if self.kept_cols.numel():
            tile_of_col = torch.arange(self.kept_cols.numel()) // self.G
            mask[self.kept_cols] = self.tile_keep[tile_of_col]
        return mask

    def kept_elements(self) -> int:
        return int((self.tile_keep.sum(dim=1) * self.tile_widths()).sum())


def layout_from_mask(mask: Tensor, G: int) -> TileLayout:
    """The smallest tile layout whose mask covers ``mask`` (any boolean ``[N, K]``).

    Output features with no kept element are dropped; within each tile of ``G``
    kept features an input feature is kept if any feature of the tile keeps it.
    For a mask produced by TW pruning this returns that mask's own layout, as long
    as no kept output feature lost all of its elements.
    """
    mask = mask.bool().cpu()
    kept_cols = torch.nonzero(mask.any(dim=1)).flatten()
    return TileLayout(mask.shape[0], mask.shape[1], G, kept_cols,
                      _tile_any(mask[kept_cols], G))


def _tile_any(rows: Tensor, G: int) -> Tensor:
    """OR over each group of ``G`` consecutive rows of a bool ``[n, K]`` matrix."""
    n, k = rows.shape
    num_tiles = -(-n // G)
    padded = torch.zeros(num_tiles * G, k, dtype=torch.bool)
    padded[:n] = rows
    return padded.view(num_tiles, G, k).any(dim=1)


@dataclass(frozen=True)
class TilePacked:
    """A weight in the TW packed format (see the module docstring)."""

    values: Tensor
    row_idx: Tensor
    row_ptr: Tensor
    col_map: Tensor
    out_features: int
    in_features: int

    @property
    def G(self) -> int:
        return int(self.values.shape[1])

    def tensors(self) -> dict[str, Tensor]:
        return {"values": self.values, "row_idx": self.row_idx,
                "row_ptr": self.row_ptr, "col_map": self.col_map}


def pack(weight: Tensor, layout: TileLayout) -> TilePacked:
    """Pack the elements of ``weight [N, K]`` that ``layout`` keeps."""
    if tuple(weight.shape) != (layout.out_features, layout.in_features):
        raise ValueError(f"weight shape {tuple(weight.shape)} does not match the layout "
                         f"({layout.out_features}, {layout.in_features})")
    G = layout.G
    kept = weight.detach()[layout.kept_cols.to(weight.device)]        # [N_kept, K]
    n_kept = kept.shape[0]
    padded = weight.new_zeros(layout.num_tiles * G, layout.in_features)
    padded[:n_kept] = kept
    # [T, K, G]: each (tile, k) row of G values is contiguous, so the gather below
    # copies whole rows instead of striding through the weight.
    by_tile = padded.view(layout.num_tiles, G, layout.in_features).transpose(1, 2).contiguous()
    tile_of_row, row_idx = torch.nonzero(layout.tile_keep, as_tuple=True)
    values = by_tile[tile_of_row.to(weight.device), row_idx.to(weight.device)]
    counts = layout.tile_keep.sum(dim=1)
    row_ptr = torch.zeros(layout.num_tiles + 1, dtype=torch.int64)
    row_ptr[1:] = torch.cumsum(counts, dim=0)
    device = weight.device
    return TilePacked(
        values=values.contiguous().reshape(-1, G),
        row_idx=row_idx.to(torch.int32).to(device),
        row_ptr=row_ptr.to(torch.int32).to(device),
        col_map=layout.kept_cols.to(torch.int32).to(device),
        out_features=layout.out_features,
        in_features=layout.in_features,
    )


def unpack_tensors(values: Tensor, row_idx: Tensor, row_ptr: Tensor, col_map: Tensor,
                   out_features: int, in_features: int) -> Tensor:
    """Dense ``[N, K]`` weight from the packed tensors (zeros where pruned).

    Differentiable with respect to ``values``.
    """
    G = values.shape[1]
    rows = values.shape[0]
    counts = (row_ptr[1:] - row_ptr[:-1]).long()
    tile_of_row = torch.repeat_interleave(
        torch.arange(counts.numel(), device=values.device), counts, output_size=rows)
    out_pos = tile_of_row[:, None] * G + torch.arange(G, device=values.device)  # [R, G]
    n_kept = col_map.numel()
    valid = out_pos < n_kept
    out_idx = col_map.long()[out_pos.clamp(max=max(n_kept - 1, 0))]
    in_idx = row_idx.long()[:, None].expand(rows, G)
    dense = values.new_zeros(out_features, in_features)
    if rows:
        dense = dense.index_put((out_idx[valid], in_idx[valid]), values[valid])
    return dense


def unpack(packed: TilePacked) -> Tensor:
    return unpack_tensors(packed.values, packed.row_idx, packed.row_ptr, packed.col_map,
                          packed.out_features, packed.in_features)


def gather_tensors(dense: Tensor, row_idx: Tensor, row_ptr: Tensor, col_map: Tensor,
                   G: int) -> Tensor:
    """The inverse of :func:`unpack_tensors`: read a dense ``[N, K]`` matrix at the
    packed positions, giving ``[R, G]`` (zeros in edge-tile padding).

    The backward of the tile ops uses it to turn a dense weight gradient into the
    gradient of ``values``.
    """
    rows = row_idx.numel()
    counts = (row_ptr[1:] - row_ptr[:-1]).long()
    tile_of_row = torch.repeat_interleave(
        torch.arange(counts.numel(), device=dense.device), counts, output_size=rows)
    out_pos = tile_of_row[:, None] * G + torch.arange(G, device=dense.device)
    n_kept = col_map.numel()
    valid = out_pos < n_kept
    out_idx = col_map.long()[out_pos.clamp(max=max(n_kept - 1, 0))]
    gathered = dense[out_idx, row_idx.long()[:, None].expand(rows, G)] if rows else \
        dense.new_zeros(0, G)
    return torch.where(valid, gathered, torch.zeros((), dtype=dense.dtype,
                                                    device=dense.device))
