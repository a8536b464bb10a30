"""What sparsefx knows about one prunable matmul: :class:`LayerInfo`.

The find pass creates one per candidate node and stores it in
``node.meta["sparsefx.layer"]`` and in ``PassContext.layers``; later passes fill in
scores, layouts and packed weights. All weights are handled in *matrix view*
``[N out, K in]``: a Conv weight ``[C_out, C_in, *k]`` is viewed as
``[C_out, C_in * prod(k)]`` (the im2col GEMM it runs as) and an HF ``Conv1D`` weight,
stored ``[in, out]``, is transposed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

KINDS = ("linear", "conv1d", "conv2d", "addmm")


@dataclass
class LayerInfo:
    name: str                      # e.g. "encoder.layer.0.attention.self.query"
    kind: str                      # one of KINDS
    node_name: str
    weight_attr: str               # FQN of the weight parameter
    bias_attr: Optional[str]
    weight_shape: tuple[int, ...]  # as stored in the model
    prunable: bool = True
    skip_reason: str = ""
    conv_params: dict[str, Any] = field(default_factory=dict)
    importance: Optional[Tensor] = None      # float32 [N, K]
    layout: Any = None                       # TileLayout once pruned
    ew_mask: Optional[Tensor] = None         # TEW restored elements, bool [N, K]
    packed_path: Optional[str] = None         # gm.<path> is its PackedTileWeights
    op: str = "unchanged"

    @property
    def matrix_shape(self) -> tuple[int, int]:
        if self.kind == "addmm":
            return self.weight_shape[1], self.weight_shape[0]
        n = self.weight_shape[0]
        k = 1
        for d in self.weight_shape[1:]:
            k *= d
        return n, k

    @property
    def numel(self) -> int:
        n, k = self.matrix_shape
        return n * k

    def mask(self) -> Optional[Tensor]:
        """Bool ``[N, K]`` of kept elements (TW layout plus TEW restored elements)."""
        if self.layout is None:
            return None
        mask = self.layout.mask()
        return mask if self.ew_mask is None else mask | self.ew_mask

    def achieved_sparsity(self) -> Optional[float]:
        mask = self.mask()
        return None if mask is None else 1.0 - mask.sum().item() / mask.numel()


def weight_to_matrix(weight: Tensor, kind: str) -> Tensor:
    """The ``[N, K]`` matrix view of a stored weight."""
    if kind == "addmm":
        return weight.t()
    return weight.reshape(weight.shape[0], -1)


def matrix_to_weight(matrix: Tensor, kind: str, weight_shape: tuple[int, ...]) -> Tensor:
    """The stored-weight view of an ``[N, K]`` matrix (inverse of weight_to_matrix)."""
    if kind == "addmm":
        return matrix.t()
    return matrix.reshape(weight_shape)


def get_attr_path(root: torch.nn.Module, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
