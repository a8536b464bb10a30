"""``PackedTileWeights``: where a rewritten layer's packed tensors live on the module.

One instance per sparse layer, under ``gm.sparsefx_packed.<layer>``, so the packed
weights appear in ``state_dict()`` (``sparsefx_packed.fc1.values`` ...) and survive
``load_state_dict``, ``.to(device)`` and ``.half()``. ``values``, ``ew_values`` and
``bias`` are parameters (trainable through the ops' autograd); index tensors are buffers.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from sparsefx.patterns.tile import TilePacked

CONTAINER = "sparsefx_packed"
TILE_TENSORS = ("values", "row_idx", "row_ptr", "col_map")
EW_TENSORS = ("ew_crow", "ew_col", "ew_values")


class PackedTileWeights(nn.Module):
    def __init__(self, packed: TilePacked, bias: Optional[Tensor],
                 ew: Optional[tuple[Tensor, Tensor, Tensor]] = None):
        super().__init__()
        self.out_features = packed.out_features
        self.in_features = packed.in_features
        self.values = nn.Parameter(packed.values.detach().clone())
        self.register_buffer("row_idx", packed.row_idx.clone())
        self.register_buffer("row_ptr", packed.row_ptr.clone())
        self.register_buffer("col_map", packed.col_map.clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.has_ew = ew is not None
        if ew is not None:
            crow, col, vals = ew
            self.register_buffer("ew_crow", crow.clone())
            self.register_buffer("ew_col", col.clone())
            self.ew_values = nn.Parameter(vals.detach().clone())

    def extra_repr(self) -> str:
        return (f"out_features={self.out_features}, in_features={self.in_features}, "
                f"G={self.values.shape[1]}, tiles={self.row_ptr.numel() - 1}, "
                f"kept_rows={self.values.shape[0]}, ew={self.has_ew}")


def dense_to_csr(dense: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """CSR (int32 crow, int32 col, values) of the ``mask`` positions of ``dense``."""
    rows, cols = torch.nonzero(mask, as_tuple=True)
    crow = torch.zeros(mask.shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=mask.shape[0]), dim=0)
    return crow.to(torch.int32), cols.to(torch.int32), dense[rows, cols].contiguous()
