"""torch-tensorrt converters for the ``sparsefx`` ops (import-guarded).

Why: ``torch_tensorrt.compile(sm, ir="dynamo")`` partitions a graph into TensorRT
engines and runs every op it has no converter for in PyTorch — each sparse layer would
split the engine. Registering converters keeps the whole model in one engine.

Lowering (same for ``tile_linear`` and the TW part of ``tew_linear``): the packed
tensors are constants at engine-build time (torch-tensorrt freezes parameters), so the
converter plans the layer on the host with :func:`plan_tiles` and emits, per tile,
``gather(x, kept inputs of the tile) @ values[tile]`` — a ``[M, k_t] x [k_t, G]`` GEMM —,
concatenates the tiles, and gathers the ``N`` outputs (pruned outputs read a zero
column), then adds the bias and applies the activation. The engine stores only the
packed values. TEW's restored elements are added as a small dense ``[N, K]`` constant
GEMM (they are few, and TensorRT has no sparse-dense GEMM layer). Feature-major layout
is handled by transposing in and out.

What was verified: TensorRT cannot be installed on the machines this was written on.
:func:`plan_tiles` and :func:`run_plan` (the same computation in PyTorch) are tested on
CPU against ``torch.ops.sparsefx.tile_linear``; the TensorRT layer calls in
:func:`_convert_linear` were *not* run. ``tests/backends/test_tensorrt.py`` runs an
end-to-end engine check when ``torch_tensorrt`` imports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from sparsefx.errors import ExportError
from sparsefx.runtime.ops import apply_activation, csr_to_dense

try:  # pragma: no cover - exercised only where TensorRT is installed
    import tensorrt as trt
    import torch_tensorrt
    from torch_tensorrt.dynamo.conversion import dynamo_tensorrt_converter
    AVAILABLE = True
    IMPORT_ERROR: Optional[BaseException] = None
except Exception as exc:  # ImportError, or a CUDA/driver error raised on import
    trt = torch_tensorrt = dynamo_tensorrt_converter = None
    AVAILABLE = False
    IMPORT_ERROR = exc

_REGISTERED = False


# ------------------------------------------------------------------ host-side plan
@dataclass
class TilePlan:
    """One GEMM per non-empty tile plus the gather that orders the outputs."""

    in_idx: list[Tensor]      # per tile: int64 [k_t] input features it reads
    blocks: list[Tensor]      # per tile: [k_t, G] packed values
    out_gather: Tensor        # int64 [N]: column of concat(tiles, zero) for each output
    out_features: int


def plan_tiles(values: Tensor, row_idx: Tensor, row_ptr: Tensor, col_map: Tensor,
               out_features: int) -> TilePlan:
    """Split a TW packed weight into per-tile GEMMs (empty tiles are dropped: their
    outputs read the zero column, exactly like pruned output features)."""
    G = values.shape[1]
    ptr = row_ptr.long().tolist()
    n_kept = col_map.numel()
    in_idx, blocks, tile_cols = [], [], []
    for t in range(len(ptr) - 1):
        if ptr[t + 1] == ptr[t]:
            continue
        width = min(G, n_kept - t * G)
        in_idx.append(row_idx[ptr[t]:ptr[t + 1]].long())
        blocks.append(values[ptr[t]:ptr[t + 1], :width])
        tile_cols.append(col_map[t * G:t * G + width].long())
    computed = torch.cat(tile_cols) if tile_cols else torch.zeros(0, dtype=torch.long)
    zero_col = computed.numel()                   # index of the appended zero column
    out_gather = torch.full((out_features,), zero_col, dtype=torch.long)
    out_gather[computed] = torch.arange(computed.numel())
    return TilePlan(in_idx, blocks, out_gather, out_features)


def run_plan(x: Tensor, plan: TilePlan, bias: Optional[Tensor], activation: str,
             ew_dense: Optional[Tensor] = None) -> Tensor:
    """The converter's computation in PyTorch for row-major ``x [..., K]`` (the tests
    check it against the op; the TensorRT layers mirror it one to one)."""
    parts = [x[..., idx] @ block.to(x.dtype) for idx, block in zip(plan.in_idx, plan.blocks)]
    parts.append(x.new_zeros(*x.shape[:-1], 1))
    y = torch.cat(parts, dim=-1)[..., plan.out_gather]
    if ew_dense is not None:
        y = y + x @ ew_dense.t().to(x.dtype)
    if bias is not None:
        y = y + bias.to(x.dtype)
    return apply_activation(y, activation)


# ------------------------------------------------------------------ registration
def register_converters() -> None:
    """Register the sparsefx converters with torch-tensorrt (idempotent).

    Raises:
        ExportError: torch-tensorrt / TensorRT is not importable here.
    """
    global _REGISTERED
    if not AVAILABLE:
        raise ExportError(
            "sparsefx.backends.tensorrt needs torch-tensorrt and TensorRT (pip install "
            f"torch-tensorrt, on a machine with an NVIDIA GPU); import failed: "
            f"{IMPORT_ERROR!r}")
    if _REGISTERED:
        return
    tile = torch.ops.sparsefx.tile_linear.default
    tew = torch.ops.sparsefx.tew_linear.default
    dynamo_tensorrt_converter(tile, supports_dynamic_shapes=True)(_convert_tile_linear)
    dynamo_tensorrt_converter(tew, supports_dynamic_shapes=True)(_convert_tew_linear)
    _REGISTERED = True


def compile_with_tensorrt(sm: torch.nn.Module, example_inputs, **options):
    """``torch_tensorrt.compile(sm, ir="dynamo", ...)`` with the converters registered."""
    register_converters()
    inputs = list(example_inputs) if isinstance(example_inputs, (tuple, list)) \
        else [example_inputs]
    return torch_tensorrt.compile(sm, ir="dynamo", inputs=inputs, **options)


# ------------------------------------------------------------------ converters
def _convert_tile_linear(ctx, target, args, kwargs, name):  # pragma: no cover
    x, values, row_idx, row_ptr, col_map, bias, out_features, *rest = args
    return _convert_linear(ctx, name, x, (values, row_idx, row_ptr, col_map), None, bias,
                           out_features, *rest)


def _convert_tew_linear(ctx, target, args, kwargs, name):  # pragma: no cover
    (x, values, row_idx, row_ptr, col_map, crow, col, ew_values, bias, out_features,
     *rest) = args
    return _convert_linear(ctx, name, x, (values, row_idx, row_ptr, col_map),
                           (crow, col, ew_values), bias,
                           out_features, *rest)


def _constant(value, what: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise ExportError(f"TensorRT converter: {what} must be a frozen constant (a "
                          "parameter/buffer of the compiled model), got a runtime tensor")
    return value.detach()


def _convert_linear(ctx, name, x, packed, ew, bias, out_features, activation="none",
                    feature_major=False):  # pragma: no cover - needs TensorRT
    net = ctx.net
    values, row_idx, row_ptr, col_map = (_constant(t, n) for t, n in zip(
        packed, ("values", "row_idx", "row_ptr", "col_map")))
    plan = plan_tiles(values, row_idx, row_ptr, col_map, out_features)
    if feature_major:                                   # [K, M] -> [M, K]
        x = net.add_shuffle(x)
        x.first_transpose = trt.Permutation([1, 0])
        x = x.get_output(0)
    last = len(x.shape) - 1
    dtype = values.dtype

    def const(tensor: Tensor, label: str):
        layer = net.add_constant(tuple(tensor.shape), tensor.contiguous().cpu().numpy())
        layer.name = f"{name}_{label}"
        return layer.get_output(0)

    parts = []
    for t, (idx, block) in enumerate(zip(plan.in_idx, plan.blocks)):
        gathered = net.add_gather(x, const(idx.int(), f"idx{t}"), last).get_output(0)
        gemm = net.add_matrix_multiply(gathered, trt.MatrixOperation.NONE,
                                       _broadcastable(net, const(block.to(dtype),
                                                                 f"vals{t}"), last + 1),
                                       trt.MatrixOperation.NONE)
        parts.append(gemm.get_output(0))
    # zero column: x[..., :1] * 0 keeps x's dynamic leading shape
    first = net.add_gather(x, const(torch.zeros(1, dtype=torch.int32), "zcol"), last)
    zero = net.add_elementwise(first.get_output(0), _broadcastable(
        net, const(torch.zeros(1, dtype=dtype), "zero"), last + 1),
        trt.ElementWiseOperation.PROD).get_output(0)
    cat = net.add_concatenation(parts + [zero])
    cat.axis = last
    y = net.add_gather(cat.get_output(0), const(plan.out_gather.int(), "order"),
                       last).get_output(0)
    if ew is not None:
        crow, col, ew_values = (_constant(t, n) for t, n in zip(ew, ("ew_crow", "ew_col",
                                                                      "ew_values")))
        dense_ew = csr_to_dense(crow, col, ew_values, out_features, int(x.shape[last]))
        extra = net.add_matrix_multiply(x, trt.MatrixOperation.NONE, _broadcastable(
            net, const(dense_ew.to(dtype), "ew"), last + 1), trt.MatrixOperation.TRANSPOSE)
        y = net.add_elementwise(y, extra.get_output(0), trt.ElementWiseOperation.SUM
                                ).get_output(0)
    if bias is not None:
        b = _broadcastable(net, const(_constant(bias, "bias").to(dtype), "bias"), last + 1)
        y = net.add_elementwise(y, b, trt.ElementWiseOperation.SUM).get_output(0)
    y = _activation(net, y, activation)
    if feature_major:
        back = net.add_shuffle(y)
        back.first_transpose = trt.Permutation([1, 0])
        y = back.get_output(0)
    return y


def _broadcastable(net, tensor, rank: int):  # pragma: no cover - needs TensorRT
    """Prepend unit dims so a constant broadcasts against a rank-``rank`` tensor."""
    missing = rank - len(tensor.shape)
    if missing <= 0:
        return tensor
    shuffle = net.add_shuffle(tensor)
    shuffle.reshape_dims = (1,) * missing + tuple(tensor.shape)
    return shuffle.get_output(0)


def _activation(net, y, activation: str):  # pragma: no cover - needs TensorRT
    if activation == "none":
        return y
    if activation == "relu":
        return net.add_activation(y, trt.ActivationType.RELU).get_output(0)
    if activation == "silu":
        sig = net.add_activation(y, trt.ActivationType.SIGMOID).get_output(0)
        return net.add_elementwise(y, sig, trt.ElementWiseOperation.PROD).get_output(0)
    if activation == "gelu":   # exact erf GELU, like torch.nn.functional.gelu
        return net.add_activation(y, trt.ActivationType.GELU_ERF).get_output(0)
    raise ExportError(f"TensorRT converter: unknown activation {activation!r}")
