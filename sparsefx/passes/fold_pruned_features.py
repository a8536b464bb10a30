"""fold_pruned_features: drop a tile layer's pruned-away output features when the next
tile layer is their only reader, folding their constant value into that layer's bias.

Why: column pruning removes whole output features of a tile layer A. Those features are
still part of A's output: each holds ``act(b_A[j])`` (``act(0)`` without a bias), a
constant. Writing them costs a separate, scattered write on the GPU (on a row-major
output, one 2-byte store per token and feature; RESULTS run 17: 10 µs of a 45 µs
BERT intermediate layer), and they keep A's tiles from covering one contiguous run of
outputs, so the sm90 kernel cannot bulk-store them. When A's only reader is the next
tile layer B (BERT's and ViT's ``intermediate`` → ``output``), the constants can go
into B instead::

    B(h) = W_B[:, kept] · h[kept] + (b_B + W_B[:, pruned] · act(b_A[pruned]))

so A computes and writes only its kept features, contiguously, and B reads only those:
its packed rows at the pruned features are removed (fewer kept rows per tile, so less
work as well) and their contribution is added to its bias.

The compacted width is ``N_kept`` rounded up to a multiple of 8 (16 bytes in fp16/bf16)
by zero columns in A's edge tile (weights 0, bias 0, so they hold ``act(0) = 0``), which
B never reads. An odd width would make every row of A's output and B's input start
unaligned: no bulk tensor stores for A, no TMA or vector loads for cuBLAS on B. (The
first GPU run of this pass had no padding; its row-major BERT readers, with 24% fewer
rows, took 38 µs each against 25.7 µs for the unfolded layer run dense. Padded, they
run at 23.3 µs, and row-major BERT-base end to end went 1.870 → 1.493 ms: RESULTS run 21,
calls 1 and 2.)

Folds A into B when all hold:

* A and B are ``sparsefx::tile_linear`` (not ``tew_linear``: restored elements may sit
  in pruned features, and B's element overlay would need re-indexing too), both
  row-major (the pass runs before ``propagate_layout``);
* A has pruned-away features and keeps at least one;
* A's output reaches only B, as B's input, directly or through inference-mode dropouts
  (identities);
* the model is in eval mode (``model.training`` is False). The folded bias is a
  snapshot of A's bias and B's weights: training the compiled module would no longer
  train ``b_A[pruned]`` or B's weights at those inputs, so a model compiled in train mode
  keeps the features (the records say so), as ``fold_batchnorm`` only folds
  inference-mode BatchNorm.

Numerics: exact in real arithmetic. The folded term is computed in float64 from B's
packed values (the masked weight that runs) and A's bias with the exact activation
(the CPU reference's; the GPU epilogue's GELU is within 1.3e-5 of it), then rounded once
to B's bias dtype. A's output values at the kept features are unchanged.

Before: ``fuse_epilogue`` (A's activation and bias are its arguments), before
``propagate_layout`` and ``choose_kernel`` (which must see the new shapes). After: A's
packed weight has ``col_map`` = the ranks of its old ``col_map`` (``0..N_kept-1`` for the
packer's ascending map) then the padding columns, ``out_features`` = the padded width
and the bias of the kept features (0 for the padding); A's node (and the dropouts after
it) carry the ``[..., width]`` shape meta; B's packed weight has ``in_features`` = the
width, its rows re-indexed (still ascending per tile) and
the folded bias (a new bias parameter when B had none and the term is not zero).
Idempotent: A has no pruned-away features left.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, fx, nn

from sparsefx.layers import get_attr_path
from sparsefx.passes._match import match_identity_dropout, set_shape_meta
from sparsefx.passes.fuse_epilogue import get_op_arg, set_op_arg
from sparsefx.passes.infra import LAYER_META, PassContext, PassResult, Record
from sparsefx.patterns.tile import TilePacked, unpack
from sparsefx.runtime.ops import apply_activation
from sparsefx.runtime.packed import PackedTileWeights

_TILE = torch.ops.sparsefx.tile_linear.default


class FoldPrunedFeatures:
    name = "fold_pruned_features"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        records, modified = [], False
        for producer in [n for n in gm.graph.nodes if _is_row_major_tile_op(n)]:
            if _pruned_feature_count(gm, producer) == 0:
                continue
            match = _only_reader(gm, producer)
            if match is None:
                continue
            consumer, passthrough = match
            if ctx.model is not None and ctx.model.training:
                records.append(Record("fold_skipped", _layer_name(producer), {
                    "into": _layer_name(consumer),
                    "reason": "model in training mode (call .eval() to fold)"}))
                continue
            records.append(_fold(gm, producer, consumer, passthrough))
            modified = True
        if modified:
            gm.graph.lint()
            gm.recompile()
        return PassResult(gm, modified, records)


# --------------------------------------------------------------------------- matching
def _is_row_major_tile_op(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target is _TILE
            and not get_op_arg(node, "feature_major"))


def _packed_path(node: fx.Node) -> Optional[str]:
    """``sparsefx_packed.<layer>`` of a tile op whose tensors are ``get_attr`` nodes."""
    values = node.args[1] if len(node.args) > 1 else None
    if not (isinstance(values, fx.Node) and values.op == "get_attr"):
        return None
    return values.target.rpartition(".")[0]


def _packed(gm: fx.GraphModule, node: fx.Node) -> Optional[PackedTileWeights]:
    path = _packed_path(node)
    module = get_attr_path(gm, path) if path else None
    return module if isinstance(module, PackedTileWeights) and not module.has_ew else None


def _pruned_feature_count(gm: fx.GraphModule, node: fx.Node) -> int:
    """Output features column pruning removed (0 when the layer keeps none: folding
    would leave an empty layer)."""
    packed = _packed(gm, node)
    if packed is None or packed.col_map.numel() == 0:
        return 0
    return int(get_op_arg(node, "out_features")) - int(packed.col_map.numel())


def _only_reader(gm: fx.GraphModule, producer: fx.Node
                 ) -> Optional[tuple[fx.Node, list[fx.Node]]]:
    """``(B, dropouts between)`` when ``producer``'s output reaches only the row-major
    tile op B, as B's input, through nothing but identity dropouts; else None."""
    passthrough, value = [], producer
    while len(value.users) == 1:
        user = next(iter(value.users))
        if match_identity_dropout(gm, user) is value:
            passthrough.append(user)
            value = user
            continue
        if not (_is_row_major_tile_op(user) and user.args[0] is value
                and value not in user.args[1:] and value not in user.kwargs.values()):
            return None
        reader = _packed(gm, user)
        if reader is None or reader.in_features != get_op_arg(producer, "out_features"):
            return None
        return user, passthrough
    return None


def _layer_name(node: fx.Node) -> str:
    info = node.meta.get(LAYER_META)
    return getattr(info, "name", None) or node.name


# --------------------------------------------------------------------------- folding
def _fold(gm: fx.GraphModule, producer: fx.Node, consumer: fx.Node,
          passthrough: list[fx.Node]) -> Record:
    a, b = _packed(gm, producer), _packed(gm, consumer)
    n_out = int(get_op_arg(producer, "out_features"))
    col_map = a.col_map.long().cpu()
    pruned = _complement(col_map, n_out)
    # compact position of each kept feature: its rank, so B's row order is kept
    new_index = torch.full((n_out,), -1, dtype=torch.long)
    new_index[col_map.sort().values] = torch.arange(col_map.numel())

    constants = _pruned_values(a.bias, get_op_arg(producer, "activation"), pruned)
    folded_bias = _folded_bias(b, pruned, constants)
    width = _padded_width(int(col_map.numel()), a.values.shape[1],
                          get_op_arg(producer, "activation"))
    new_b, rows_removed = _consumer_without(b, new_index, folded_bias, width)
    new_a = _compacted_producer(a, col_map, new_index, width)

    container_path_a, container_path_b = _packed_path(producer), _packed_path(consumer)
    _replace_module(gm, container_path_a, new_a)
    _replace_module(gm, container_path_b, new_b)
    set_op_arg(producer, "out_features", width)
    if get_op_arg(consumer, "bias") is None and new_b.bias is not None:
        with gm.graph.inserting_before(consumer):
            set_op_arg(consumer, "bias", gm.graph.get_attr(f"{container_path_b}.bias"))
    for node in [producer, *passthrough]:
        _set_last_dim(node, width)
    _drop_stale_attr_meta(gm, (container_path_a, container_path_b))
    return Record("folded", _layer_name(producer), {
        "into": _layer_name(consumer), "features": int(pruned.numel()),
        "padding": width - int(col_map.numel()),
        "consumer_rows_removed": rows_removed,
        "consumer_rows_left": int(new_b.values.shape[0])})


def _padded_width(n_kept: int, G: int, activation: str) -> int:
    """``n_kept`` rounded up to a multiple of 8, when the padding fits in the edge tile
    (always, for ``G % 8 == 0``) and the activation maps 0 to 0; else ``n_kept``."""
    width = -(-n_kept // 8) * 8
    edge_room = -(-n_kept // G) * G - n_kept
    zero = apply_activation(torch.zeros(1, dtype=torch.float64), activation)
    if width - n_kept > edge_room or bool(zero.any()):
        return n_kept
    return width


def _complement(col_map: Tensor, n_out: int) -> Tensor:
    present = torch.zeros(n_out, dtype=torch.bool)
    present[col_map] = True
    return torch.nonzero(~present).flatten()


def _pruned_values(bias: Optional[Tensor], activation: str, pruned: Tensor) -> Tensor:
    """float64 value of each pruned feature: ``act(bias)`` (``act(0)`` without bias)."""
    pre = (bias.detach().double().cpu()[pruned] if bias is not None
           else torch.zeros(pruned.numel(), dtype=torch.float64))
    return apply_activation(pre, activation)


def _folded_bias(b: PackedTileWeights, pruned: Tensor, constants: Tensor
                 ) -> Optional[Tensor]:
    """B's bias plus ``W_B[:, pruned] · constants`` in float64, in B's bias dtype; None
    when B had no bias and the term is exactly zero."""
    weight = unpack(_as_tile_packed(b, device="cpu", dtype=torch.float64))
    term = weight[:, pruned] @ constants
    if b.bias is None and not term.any():
        return None
    base = b.bias.detach().double().cpu() if b.bias is not None else torch.zeros_like(term)
    dtype = b.bias.dtype if b.bias is not None else b.values.dtype
    return (base + term).to(dtype=dtype, device=b.values.device)


def _consumer_without(b: PackedTileWeights, new_index: Tensor, bias: Optional[Tensor],
                      width: int) -> tuple[PackedTileWeights, int]:
    """B's packed weight with the rows at pruned inputs removed and the others
    re-indexed to the compacted input of ``width`` features."""
    device = b.values.device
    row_idx = b.row_idx.long().cpu()
    keep = new_index[row_idx] >= 0
    counts = (b.row_ptr[1:] - b.row_ptr[:-1]).long().cpu()
    tile_of_row = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    kept_counts = torch.bincount(tile_of_row[keep], minlength=counts.numel())
    row_ptr = torch.zeros(counts.numel() + 1, dtype=torch.long)
    row_ptr[1:] = torch.cumsum(kept_counts, dim=0)
    packed = TilePacked(
        values=b.values.detach()[keep.to(device)].contiguous(),
        row_idx=new_index[row_idx[keep]].to(torch.int32).to(device),
        row_ptr=row_ptr.to(torch.int32).to(device),
        col_map=b.col_map.clone(),
        out_features=b.out_features,
        in_features=width)
    return PackedTileWeights(packed, bias), int((~keep).sum())


def _compacted_producer(a: PackedTileWeights, col_map: Tensor, new_index: Tensor,
                        width: int) -> PackedTileWeights:
    """A's packed weight writing its kept features to ``0..N_kept-1`` and zeros to the
    padding up to ``width``: the edge tile's unused columns (zero weights) mapped to the
    padding features."""
    device = a.col_map.device
    n_kept = col_map.numel()
    padding = torch.arange(n_kept, width)
    values = a.values.detach().clone()
    if width > n_kept:           # the padding columns must hold zeros, whatever was there
        G = values.shape[1]
        last = slice(int(a.row_ptr[-2]), int(a.row_ptr[-1]))
        values[last, n_kept % G:] = 0
    packed = TilePacked(values=values, row_idx=a.row_idx.clone(),
                        row_ptr=a.row_ptr.clone(),
                        col_map=torch.cat([new_index[col_map], padding]).to(torch.int32)
                        .to(device),
                        out_features=width, in_features=a.in_features)
    bias = None
    if a.bias is not None:
        kept_bias = a.bias.detach()[col_map.sort().values.to(device)]
        bias = torch.cat([kept_bias, kept_bias.new_zeros(width - n_kept)])
    return PackedTileWeights(packed, bias)


def _as_tile_packed(p: PackedTileWeights, device, dtype) -> TilePacked:
    return TilePacked(values=p.values.detach().to(device=device, dtype=dtype),
                      row_idx=p.row_idx.to(device), row_ptr=p.row_ptr.to(device),
                      col_map=p.col_map.to(device), out_features=p.out_features,
                      in_features=p.in_features)


def _replace_module(gm: fx.GraphModule, path: str, module: nn.Module) -> None:
    owner_path, _, name = path.rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    setattr(owner, name, module)


# --------------------------------------------------------------------------- shape meta
def _set_last_dim(node: fx.Node, size: int) -> None:
    """Shape meta of ``node`` with its last (feature) dimension ``size``."""
    val = node.meta.get("val")
    source = val if isinstance(val, torch.Tensor) else node.meta.get("tensor_meta")
    if source is not None:
        set_shape_meta(node, (*tuple(source.shape)[:-1], size), source.dtype, val)


def _drop_stale_attr_meta(gm: fx.GraphModule, paths: tuple[str, ...]) -> None:
    """``get_attr`` nodes of the replaced packed weights may carry the old shapes."""
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.target.rpartition(".")[0] in paths:
            node.meta.pop("val", None)
            node.meta.pop("tensor_meta", None)
