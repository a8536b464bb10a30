"""Triton kernel for ``sparsefx::tile_linear`` (tile-wise sparse linear).

One program computes one *column block* (``BLOCK_N`` consecutive columns of one tile,
``BLOCK_N`` divides ``G``) for one block of ``BLOCK_M`` tokens::

    acc[BLOCK_N, BLOCK_M] = values[rows_t, cols]^T @ x[row_idx[rows_t], m-block]

The accumulator is oriented "features × tokens" because in the feature-major layout
(``x [K, M]``, ``out [N, M]``) both the gather of the kept input rows and the scatter
of the output rows (``col_map``) then move whole contiguous M-vectors. Any other
layout is expressed through the strides (row-major output is ``stride_on = 1``), so
one kernel serves both layouts; the dispatcher transposes row-major inputs first when
that is faster (the strided gather from ``x [M, K]`` cannot be vectorised).

Scheduling: the host passes ``blocks``, the column blocks sorted by kept-K descending
(longest first) with the fields a program needs (``TilePlan.blocks_for``). Hardware
hands out programs roughly in launch order, so launching heavy tiles first gives a
greedy longest-processing-time schedule when there are several waves (when all
programs fit in one wave, the heaviest tile sets the time: NOTES_tile.md round 7).
Programs are grouped ``GROUP_CB`` column blocks × all M-blocks, column block fastest,
so that concurrently running programs share the same x rows (read once from HBM) while
the group's weights stay resident in L2.

Nothing assumes ``k_t`` is a multiple of ``BLOCK_K``: rows past ``k_t`` are masked to
zero on both operands; empty tiles (``k_t = 0``) still run the epilogue, so their
columns get ``activation(bias)``.

This module imports triton at the top: import it only through
:mod:`sparsefx.runtime.cuda`, which guards the import.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from sparsefx.runtime import gelu_polynomial
from sparsefx.runtime.cuda.sm90_tile import STORE_CODES
from sparsefx.runtime.cuda.triton_launch import KernelLaunch, next_power_of_2

#: activation name -> constexpr code used inside the kernel
ACT_CODES = {"none": 0, "relu": 1, "gelu": 2, "silu": 3}


@dataclass(frozen=True)
class TileConfig:
    """Launch configuration of :func:`tile_linear_triton` (one autotuning candidate).

    ``transpose_x`` only matters for row-major inputs: gather from a feature-major copy
    (one extra transpose) instead of gathering strided columns of ``x [M, K]``.
    ``impl`` names the kernel: ``"triton"`` (this module) or ``"sm90"`` (the Hopper CUDA
    C++ kernel, :mod:`sparsefx.runtime.cuda.sm90_tile`; it always gathers from a
    feature-major x and runs ``flat`` persistent CTAs per SM). ``split`` (grid kernel
    only) cuts column blocks longer than ``ceil(mean K-steps / split)`` into parts
    whose fp32 sums the last part to finish adds (:meth:`TilePlan.split_blocks_for`).
    ``store`` (sm90 kernel only) names the epilogue's way of writing the output
    (:meth:`TilePlan.sm90_store`); empty: the plan's default for the layer.
    """

    block_n: int
    block_m: int
    block_k: int
    num_warps: int
    num_stages: int
    group_cb: int = 8
    transpose_x: bool = True
    flat: int = 0                # >0: flattened persistent kernel, this many programs/SM
    impl: str = "triton"         # "triton" or "sm90"
    split: int = 0               # >0: grid kernel with split-K (TilePlan.split_blocks_for)
    store: str = ""              # sm90 only: a key of sm90_tile.STORE_CODES, "" = default

    def __post_init__(self):
        if self.split and (self.flat or self.impl != "triton"):
            raise ValueError(f"split-K runs only in the Triton grid kernel (flat=0, "
                             f"impl='triton'), got {self}")
        if self.store and (self.impl != "sm90" or self.store not in STORE_CODES):
            raise ValueError(f"store is one of {sorted(STORE_CODES)} and only for "
                             f"impl='sm90', got {self}")

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @staticmethod
    def from_dict(d: dict) -> "TileConfig":
        return TileConfig(**d)


# gelu_polynomial.COEFFS as constexprs (a jit function reads only constexpr globals)
_GELU_C = [tl.constexpr(c) for c in gelu_polynomial.COEFFS]
_GELU_C0, _GELU_C1, _GELU_C2, _GELU_C3, _GELU_C4, _GELU_C5, _GELU_C6, _GELU_C7, \
    _GELU_C8 = _GELU_C
_GELU_CLAMP = tl.constexpr(gelu_polynomial.CLAMP)


@triton.jit
def _gelu(y):
    """GELU in fp32 as :mod:`sparsefx.runtime.gelu_polynomial` defines it: y * Phi(y)
    with Phi(-|y|) = 2 ** P(min(|y|, 9)), no erf and no branch (within 1.3e-5 of the
    exact erf form). Same operations, in the same order, as the sm90 kernel's."""
    a = tl.minimum(tl.abs(y), _GELU_CLAMP)
    p = tl.fma(_GELU_C8 + tl.zeros_like(a), a, _GELU_C7)
    p = tl.fma(p, a, _GELU_C6)
    p = tl.fma(p, a, _GELU_C5)
    p = tl.fma(p, a, _GELU_C4)
    p = tl.fma(p, a, _GELU_C3)
    p = tl.fma(p, a, _GELU_C2)
    p = tl.fma(p, a, _GELU_C1)
    p = tl.fma(p, a, _GELU_C0)
    e = tl.math.exp2(p)
    return y * tl.where(y >= 0.0, 1.0 - e, e)


@triton.jit
def _activation(y, ACT: tl.constexpr):
    """Epilogue activation in fp32 (gelu: :func:`_gelu`, the erf form to 1.3e-5)."""
    if ACT == 1:
        y = tl.maximum(y, 0.0)
    elif ACT == 2:
        y = _gelu(y)
    elif ACT == 3:
        y = y * tl.sigmoid(y)
    return y


@triton.jit
def _load_bias(bias_ptr, cols, n_mask, HAS_BIAS: tl.constexpr):
    """The bias of output features ``cols`` in fp32 (zeros without a bias; unused
    then, so compiled away)."""
    if HAS_BIAS:
        b = tl.load(bias_ptr + cols, mask=n_mask, other=0.0).to(tl.float32)
    else:
        b = tl.zeros(cols.shape, tl.float32)
    return b


@triton.jit
def _store_epilogue(acc, b, cols, n_mask, offs_m, m_mask, out_ptr, stride_on,
                    stride_om, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                    WIDE_INDEX: tl.constexpr):
    """Bias ``b`` (from :func:`_load_bias`), activation and the store scattered
    through ``cols`` (the output features of this block), shared by both kernels.
    ``acc`` is fp32 ``[BLOCK_N, BLOCK_M]``."""
    y = acc
    if HAS_BIAS:
        y = y + b[:, None]
    y = _activation(y, ACT)
    if WIDE_INDEX:
        o_off = cols.to(tl.int64)[:, None] * stride_on + \
            offs_m.to(tl.int64)[None, :] * stride_om
    else:
        o_off = cols[:, None] * stride_on + offs_m[None, :] * stride_om
    tl.store(out_ptr + o_off, y.to(out_ptr.dtype.element_ty),
             mask=n_mask[:, None] & m_mask[None, :])


@triton.jit
def _after_previous_kernel(USE_PDL: tl.constexpr):
    """With programmatic dependent launch (``USE_PDL``, Hopper): wait here until the
    previous kernel in the stream has finished and its writes are visible, then let
    the next one launch. Before this point a kernel may read only what no kernel
    writes (the host-built block tables); x, the weights and the bias may all come
    from the kernel before. The launch, the CTAs' start and those table loads then
    overlap the previous kernel's tail instead of following it."""
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def _work_item(w, num_mb, num_cb, GROUP_CB: tl.constexpr):
    """Map work item ``w`` to (position in the launch order of column blocks, M-block).

    Items are grouped ``GROUP_CB`` column blocks × all M-blocks, column block fastest,
    so programs running together share x rows (HBM once) and weights (L2)."""
    per_group = GROUP_CB * num_mb
    first_cb = (w // per_group) * GROUP_CB
    group_size = tl.minimum(num_cb - first_cb, GROUP_CB)
    local = w % per_group
    return first_cb + local % group_size, local // group_size


@triton.jit
def _tile_block(x_ptr, w_ptr, row_idx_ptr, col_map_ptr, bias_ptr, out_ptr, ws_ptr, cnt_ptr,
                start, k_t, j0, c0, mb, M, n_kept, stride_xk, stride_xm, stride_on,
                stride_om, group, parts, part, part_base,
                G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                COLS_CONTIG: tl.constexpr, WIDE_INDEX: tl.constexpr, SPLIT: tl.constexpr,
                CHUNK: tl.constexpr, MAX_PARTS: tl.constexpr):
    """Compute and store one [BLOCK_N, BLOCK_M] output block: columns ``j0 ..
    j0 + BLOCK_N`` of the packed layout (tile ``j0 // G``), whose ``k_t`` kept rows
    start at packed row ``start``; with ``COLS_CONTIG`` they are output features
    ``c0 .. c0 + BLOCK_N``. With ``SPLIT`` and ``group >= 0`` those rows are one part
    of a cut block: :func:`_finish_split_part` instead of the epilogue."""
    n0 = tl.multiple_of(j0 % G, BLOCK_N)                 # first column inside the tile
    offs_n = n0 + tl.arange(0, BLOCK_N)
    j = j0 - n0 + offs_n                                  # t*G + column in the tile
    n_mask = j < n_kept                                   # edge tile padding
    if COLS_CONTIG:
        # host checked: col_map[t*G + j] == col_map[t*G] + j and 16-aligned starts,
        # so row-major stores vectorise. The bias is loaded now, next to the first
        # row indices, so that the epilogue waits for no load.
        cols = tl.multiple_of(c0, 16) + tl.arange(0, BLOCK_N)
        b = _load_bias(bias_ptr, cols, n_mask, HAS_BIAS)
    else:
        # placeholders: _plain_epilogue loads both through col_map
        cols = j
        b = tl.zeros((BLOCK_N,), tl.float32)
    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    m_mask = offs_m < M
    if WIDE_INDEX:
        x_cols = offs_m.to(tl.int64) * stride_xm
    else:
        x_cols = offs_m * stride_xm

    # ---- main loop over the tile's kept rows --------------------------------------
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    w_tile = w_ptr + start.to(tl.int64) * G + offs_n[None, :]
    idx_tile = row_idx_ptr + start
    for k in range(0, k_t, BLOCK_K):
        kk = k + offs_k
        k_mask = kk < k_t
        rows = tl.load(idx_tile + kk, mask=k_mask, other=0)
        if WIDE_INDEX:
            x_rows = rows.to(tl.int64) * stride_xk
        else:
            x_rows = rows * stride_xk
        xb = tl.load(x_ptr + x_rows[:, None] + x_cols[None, :],
                     mask=k_mask[:, None] & m_mask[None, :], other=0.0)
        wb = tl.load(w_tile + kk[:, None] * G, mask=k_mask[:, None], other=0.0)
        acc = tl.dot(tl.trans(wb), xb, acc)

    # ---- epilogue: bias, activation, scatter through col_map ----------------------
    # (the plain epilogue is called from two branches: only a constexpr ``if`` keeps
    # the fix-up out of a kernel without split-K, whose workspace pointers are
    # placeholders of the weights' dtype that the counter atomics would not even
    # compile with)
    if SPLIT:
        if group >= 0:
            _finish_split_part(acc, ws_ptr, cnt_ptr, group, parts, part, part_base, mb,
                               tl.cdiv(M, BLOCK_M), j0, c0, offs_m, m_mask, n_kept,
                               col_map_ptr, bias_ptr, out_ptr, stride_on, stride_om,
                               BLOCK_N, BLOCK_M, CHUNK, MAX_PARTS, HAS_BIAS, ACT,
                               COLS_CONTIG, WIDE_INDEX)
        else:
            _plain_epilogue(acc, cols, b, j, n_mask, offs_m, m_mask, col_map_ptr,
                            bias_ptr, out_ptr, stride_on, stride_om, HAS_BIAS, ACT,
                            COLS_CONTIG, WIDE_INDEX)
    else:
        _plain_epilogue(acc, cols, b, j, n_mask, offs_m, m_mask, col_map_ptr, bias_ptr,
                        out_ptr, stride_on, stride_om, HAS_BIAS, ACT, COLS_CONTIG,
                        WIDE_INDEX)


@triton.jit
def _plain_epilogue(acc, cols, b, j, n_mask, offs_m, m_mask, col_map_ptr, bias_ptr,
                    out_ptr, stride_on, stride_om, HAS_BIAS: tl.constexpr,
                    ACT: tl.constexpr, COLS_CONTIG: tl.constexpr,
                    WIDE_INDEX: tl.constexpr):
    """The epilogue of a whole block: with ``COLS_CONTIG`` ``cols`` and ``b`` were
    loaded before the main loop; otherwise they are placeholders, loaded here through
    ``col_map`` (packed columns ``j``)."""
    if not COLS_CONTIG:
        cols = tl.load(col_map_ptr + j, mask=n_mask, other=0)
        b = _load_bias(bias_ptr, cols, n_mask, HAS_BIAS)
    _store_epilogue(acc, b, cols, n_mask, offs_m, m_mask, out_ptr, stride_on,
                    stride_om, HAS_BIAS, ACT, WIDE_INDEX)


@triton.jit
def _store_part_sum(acc, ws_ptr, row, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    """Store a part's fp32 sum into workspace row ``row`` (offsets built here, next
    to the store, in acc's own layout: converting acc would keep a second fp32 tile
    live, 233 registers instead of 120 in round 6)."""
    offs = tl.arange(0, BLOCK_N)[:, None] * BLOCK_M + tl.arange(0, BLOCK_M)[None, :]
    tl.store(ws_ptr + row.to(tl.int64) * (BLOCK_N * BLOCK_M) + offs, acc)


@triton.jit
def _arrive_last(counter, parts):
    """Count this part in at its group's ``counter`` after every thread's stores
    (barrier, then a release); True for the last of ``parts`` to arrive, which also
    sets the counter back to 0 for the next launch."""
    tl.debug_barrier()
    last = tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu") == parts - 1
    if last:
        tl.atomic_xchg(counter, 0, sem="relaxed", scope="gpu")
    return last


@triton.jit
def _finish_split_part(acc, ws_ptr, cnt_ptr, group, parts, part, part_base, mb, num_mb,
                       j0, c0, offs_m, m_mask, n_kept, col_map_ptr, bias_ptr, out_ptr,
                       stride_on, stride_om, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                       CHUNK: tl.constexpr, MAX_PARTS: tl.constexpr, HAS_BIAS: tl.constexpr,
                       ACT: tl.constexpr, COLS_CONTIG: tl.constexpr,
                       WIDE_INDEX: tl.constexpr):
    """One part of a cut column block is done: store its fp32 sum into its workspace
    row ((part_base + part) * num_mb + mb), then count the group's arrivals at this
    M-block. The last part to arrive adds every part's sum (in part order, so the
    result does not depend on which part came last; ``MAX_PARTS`` >= parts, a power
    of two, unrolls the loads so they are in flight together) and runs the epilogue.
    Nobody waits for anybody: no deadlock however the programs are scheduled, and
    Triton still pipelines the main loop (a spin-wait in a loop stops that:
    bench/NOTES_tile.md round 6)."""
    _store_part_sum(acc, ws_ptr, (part_base + part) * num_mb + mb, BLOCK_N, BLOCK_M)
    if _arrive_last(cnt_ptr + group * num_mb + mb, parts):
        tile = BLOCK_N * BLOCK_M
        ar_m = tl.arange(0, BLOCK_M)
        for c in tl.static_range(0, BLOCK_N, CHUNK):
            rows_c = c + tl.arange(0, CHUNK)
            offs_c = rows_c[:, None] * BLOCK_M + ar_m[None, :]
            y = tl.zeros((CHUNK, BLOCK_M), dtype=tl.float32)
            for q in tl.static_range(MAX_PARTS):
                # .cg: written by other SMs; read from L2, never a stale L1 line
                y += tl.load(ws_ptr + ((part_base + q) * num_mb + mb).to(tl.int64) * tile
                             + offs_c, mask=q < parts, other=0.0, cache_modifier=".cg")
            j = j0 + rows_c
            n_mask = j < n_kept
            if COLS_CONTIG:
                cols = c0 + rows_c
            else:
                cols = tl.load(col_map_ptr + j, mask=n_mask, other=0)
            b = _load_bias(bias_ptr, cols, n_mask, HAS_BIAS)
            _store_epilogue(y, b, cols, n_mask, offs_m, m_mask, out_ptr, stride_on,
                            stride_om, HAS_BIAS, ACT, WIDE_INDEX)


@triton.jit
def _tile_linear_kernel(
    x_ptr, w_ptr, row_idx_ptr, col_map_ptr, bias_ptr, out_ptr, blocks_ptr, ws_ptr, cnt_ptr,
    M, n_kept, num_cb,
    stride_xk, stride_xm, stride_on, stride_om,
    G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr, GROUP_CB: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACT: tl.constexpr, COLS_CONTIG: tl.constexpr, WIDE_INDEX: tl.constexpr,
    USE_PDL: tl.constexpr, SPLIT: tl.constexpr, CHUNK: tl.constexpr,
    MAX_PARTS: tl.constexpr,
):
    """One program per work item; the hardware scheduler balances (launch order =
    LPT order). ``blocks_ptr``: int32 [num_cb, 4] = (first packed row, k_t,
    t*G + n0, first output feature) per column block in launch order
    (:meth:`TilePlan.blocks_for`); with ``SPLIT``, int32 [num_cb, 8] rows of
    :meth:`TilePlan.split_blocks_for` (four more fields: group, parts, part, first
    workspace row) and ``ws_ptr``/``cnt_ptr`` its workspace (partial sums, counters)."""
    num_mb = tl.cdiv(M, BLOCK_M)
    pos, mb = _work_item(tl.program_id(0), num_mb, num_cb, GROUP_CB)
    if SPLIT:
        row = blocks_ptr + 8 * pos
        group = tl.load(row + 4)
        parts = tl.load(row + 5)
        part = tl.load(row + 6)
        part_base = tl.load(row + 7)
    else:
        row = blocks_ptr + 4 * pos
        group = pos * 0 - 1
        parts = pos * 0 + 1
        part = pos * 0
        part_base = pos * 0
    start = tl.load(row)
    k_t = tl.load(row + 1)
    j0 = tl.load(row + 2)
    c0 = tl.load(row + 3)
    _after_previous_kernel(USE_PDL)
    _tile_block(x_ptr, w_ptr, row_idx_ptr, col_map_ptr, bias_ptr, out_ptr, ws_ptr, cnt_ptr,
                start, k_t, j0, c0, mb, M, n_kept, stride_xk, stride_xm, stride_on,
                stride_om, group, parts, part, part_base,
                G, BLOCK_N, BLOCK_M, BLOCK_K, HAS_BIAS, ACT, COLS_CONTIG, WIDE_INDEX,
                SPLIT, CHUNK, MAX_PARTS)


@triton.jit
def _tile_linear_flat(
    x_ptr, w_ptr, row_idx_ptr, col_map_ptr, bias_ptr, out_ptr, items_ptr, progs_ptr,
    M, n_kept, stride_xk, stride_xm, stride_on, stride_om,
    G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACT: tl.constexpr, COLS_CONTIG: tl.constexpr, WIDE_INDEX: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    """Persistent grid with ONE loop over every K-step of every work item of this
    program (the host's list schedule, :meth:`TilePlan.schedule_for`), and the epilogue
    under an ``if`` when an item ends. One loop lets the software pipeline prefetch
    the next item's first K-steps while this item's last dot and epilogue run, so a
    work item costs no pipeline fill (the non-persistent kernel pays fill + epilogue
    per program, which dominates when a tile keeps few rows).

    ``items_ptr``: int32 [n_items, 4] = (first packed row, k_t, t*G + n0, M-block),
    grouped per program; ``progs_ptr``: int32 [P, 2] = (first item, total K-steps),
    where an item takes max(1, cdiv(k_t, BLOCK_K)) steps (empty tiles still store
    ``activation(bias)``)."""
    pid = tl.program_id(0)
    it = tl.load(progs_ptr + 2 * pid) - 1
    steps = tl.load(progs_ptr + 2 * pid + 1)
    _after_previous_kernel(USE_PDL)
    offs_n = tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    ar_m = tl.arange(0, BLOCK_M)
    start = it * 0
    k_t = it * 0
    j0 = it * 0
    mb = it * 0
    k = it * 0
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for _s in range(0, steps):
        if k == 0:                                        # a new work item starts
            it += 1
            start = tl.load(items_ptr + 4 * it)
            k_t = tl.load(items_ptr + 4 * it + 1)
            j0 = tl.load(items_ptr + 4 * it + 2)
            mb = tl.load(items_ptr + 4 * it + 3)
        n0 = tl.multiple_of(j0 % G, BLOCK_N)             # column inside the tile
        offs_m = mb * BLOCK_M + ar_m
        m_mask = offs_m < M
        kk = k + offs_k
        k_mask = kk < k_t
        rows = tl.load(row_idx_ptr + start + kk, mask=k_mask, other=0)
        if WIDE_INDEX:
            x_off = rows.to(tl.int64)[:, None] * stride_xk + \
                offs_m.to(tl.int64)[None, :] * stride_xm
            w_off = (start + kk).to(tl.int64)[:, None] * G
        else:
            x_off = rows[:, None] * stride_xk + offs_m[None, :] * stride_xm
            w_off = (start + kk)[:, None] * G
        xb = tl.load(x_ptr + x_off, mask=k_mask[:, None] & m_mask[None, :], other=0.0)
        wb = tl.load(w_ptr + w_off + (n0 + offs_n)[None, :], mask=k_mask[:, None],
                     other=0.0)
        acc = tl.dot(tl.trans(wb), xb, acc)
        k_next = k + BLOCK_K
        done = k_next >= k_t
        k = tl.where(done, 0, k_next)
        if done:                                          # epilogue of this item
            j = j0 + offs_n
            n_mask = j < n_kept
            if COLS_CONTIG:
                cols = tl.multiple_of(tl.load(col_map_ptr + j0 - n0), 16) + n0 + offs_n
            else:
                cols = tl.load(col_map_ptr + j, mask=n_mask, other=0)
            b = _load_bias(bias_ptr, cols, n_mask, HAS_BIAS)
            _store_epilogue(acc, b, cols, n_mask, offs_m, m_mask, out_ptr,
                            stride_on, stride_om, HAS_BIAS, ACT, WIDE_INDEX)
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)


def tile_kernel_launch(x2: Tensor, x_feature_major: bool, values: Tensor, row_idx: Tensor,
                       col_map: Tensor, bias: Optional[Tensor], out2: Tensor,
                       out_feature_major: bool, blocks: Tensor, cols_contig: bool,
                       activation: str, cfg: TileConfig,
                       schedule: Optional[tuple] = None,
                       split: Optional[tuple] = None) -> Optional[KernelLaunch]:
    """The kernel launch on 2-D views (``.run()`` it), or None when there is nothing to
    compute.

    ``x2`` is ``[K, M]`` when ``x_feature_major`` else ``[M, K]``; ``out2`` likewise
    ``[N, M]`` or ``[M, N]``. ``blocks`` lists the column blocks (``G // block_n``
    per tile) in launch order, from :meth:`TilePlan.blocks_for`. The kernel writes only
    the columns listed in ``col_map``. ``schedule`` = (items, progs) from
    :meth:`TilePlan.schedule_for`, needed when ``cfg.flat``. ``split`` = (table,
    partial sums, counters, most parts of one block) from
    :meth:`TilePlan.split_blocks_for` and :meth:`TilePlan.split_workspace` runs the
    grid kernel split-K (``blocks`` is then unused).

    The launch's first six tensors are always ``x2, values, row_idx, col_map``, the
    bias (``values`` when there is none) and ``out2``, in that order; the rest come
    from the plan (``blocks`` or the schedule, the split workspace), so a caller can
    replay it with other tensors (``dispatch._EagerRunner``)."""
    G = values.shape[1]
    if x_feature_major:
        K, M = x2.shape
        stride_xk, stride_xm = x2.stride()
    else:
        M, K = x2.shape
        stride_xm, stride_xk = x2.stride()
    if out_feature_major:
        stride_on, stride_om = out2.stride()
    else:
        stride_om, stride_on = out2.stride()
    max_parts = 1
    if split is not None:
        blocks, ws, counters, max_parts = split
    else:
        ws = counters = values                   # unused: SPLIT is a constexpr False
    num_cb = blocks.shape[0]
    if M == 0 or num_cb == 0:
        return None
    wide = max(x2.numel(), out2.numel(), values.numel()) >= 2**31 - 1
    b_arg = bias if bias is not None else values
    strides = (stride_xk, stride_xm, stride_on, stride_om)
    pdl = pdl_enabled(x2.device)
    options = dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages, launch_pdl=pdl)
    # constexprs in signature order (triton_launch relaunches positionally)
    if cfg.flat:
        items, progs = schedule
        constexprs = dict(G=G, BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m,
                          BLOCK_K=cfg.block_k, HAS_BIAS=bias is not None,
                          ACT=ACT_CODES[activation], COLS_CONTIG=cols_contig,
                          WIDE_INDEX=wide, USE_PDL=pdl)
        return KernelLaunch(_tile_linear_flat, (progs.shape[0],),
                            (x2, values, row_idx, col_map, b_arg, out2, items, progs),
                            (M, col_map.numel(), *strides), constexprs, options)
    constexprs = dict(G=G, BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
                      GROUP_CB=cfg.group_cb, HAS_BIAS=bias is not None,
                      ACT=ACT_CODES[activation], COLS_CONTIG=cols_contig, WIDE_INDEX=wide,
                      USE_PDL=pdl, SPLIT=split is not None,
                      CHUNK=_split_chunk(cfg.block_n, cfg.block_m, max_parts),
                      MAX_PARTS=next_power_of_2(max_parts))
    # -(-a // b): triton.cdiv is a jit function, ~5 µs per host call
    return KernelLaunch(_tile_linear_kernel, (num_cb * -(-M // cfg.block_m),),
                        (x2, values, row_idx, col_map, b_arg, out2, blocks, ws, counters),
                        (M, col_map.numel(), num_cb, *strides), constexprs, options)


def _split_chunk(block_n: int, block_m: int, max_parts: int) -> int:
    """Rows of a block that the last part of a cut block sums at a time: the loads of
    all parts of a chunk are issued together (one L2 latency, not one per part), so a
    chunk of every part must fit in about 64 fp32 registers per thread of 4 warps."""
    chunk = block_n
    while chunk > 16 and chunk * block_m * next_power_of_2(max_parts) > 8192:
        chunk //= 2
    return chunk


_pdl: dict = {}


def pdl_enabled(device: torch.device) -> bool:
    """Whether the Triton kernels launch with programmatic dependent launch: on CUDA
    devices of compute capability 9.0 or newer, unless ``SPARSEFX_PDL=0`` (or the
    Triton interpreter runs the kernels)."""
    hit = _pdl.get(device)
    if hit is None:
        hit = (device.type == "cuda" and os.environ.get("SPARSEFX_PDL", "1") != "0"
               and os.environ.get("TRITON_INTERPRET", "0") != "1"
               and torch.cuda.get_device_capability(device)[0] >= 9)
        _pdl[device] = hit
    return hit


def num_sms(device: torch.device) -> int:
    """Multiprocessor count (cached: the query costs microseconds per call)."""
    return _num_sms(device)


_sms: dict = {}


def _num_sms(device: torch.device) -> int:
    """Multiprocessor count (cached: the query costs microseconds per call)."""
    if device not in _sms:
        _sms[device] = torch.cuda.get_device_properties(device).multi_processor_count \
            if device.type == "cuda" else 4
    return _sms[device]
