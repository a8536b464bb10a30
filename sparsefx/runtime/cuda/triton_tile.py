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

Scheduling: the host passes ``order``, the column blocks sorted by kept-K descending
(longest first). Hardware hands out programs roughly in launch order, so launching
heavy tiles first gives a greedy longest-processing-time schedule: uneven tiles do not
leave a long tail. Programs are grouped ``GROUP_CB`` column blocks × all M-blocks,
column block fastest, so that concurrently running programs share the same x rows
(read once from HBM) while the group's weights stay resident in L2.

Nothing assumes ``k_t`` is a multiple of ``BLOCK_K``: rows past ``k_t`` are masked to
zero on both operands; empty tiles (``k_t = 0``) still run the epilogue, so their
columns get ``activation(bias)``.

This module imports triton at the top: import it only through
:mod:`sparsefx.runtime.cuda`, which guards the import.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from sparsefx.runtime.cuda.triton_launch import launch, stream_handle

#: activation name -> constexpr code used inside the kernel
ACT_CODES = {"none": 0, "relu": 1, "gelu": 2, "silu": 3}


@dataclass(frozen=True)
class TileConfig:
    """Launch configuration of :func:`tile_linear_triton` (one autotuning candidate).

    ``transpose_x`` only matters for row-major inputs: gather from a feature-major copy
    (one extra transpose) instead of gathering strided columns of ``x [M, K]``.
    ``impl`` names the kernel: ``"triton"`` (this module) or ``"sm90"`` (the Hopper CUDA
    C++ kernel, :mod:`sparsefx.runtime.cuda.sm90_tile`; it always gathers from a
    feature-major x and runs ``flat`` persistent CTAs per SM). ``stream_k`` (Triton,
    needs ``flat``) splits the work into equal K-step ranges per program instead of
    whole items (:meth:`TilePlan.stream_k_for`).
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
    stream_k: bool = False       # flat kernel over equal K-step ranges (split items)

    def __post_init__(self):
        if self.stream_k and (not self.flat or self.impl != "triton"):
            raise ValueError("stream_k needs the flattened Triton kernel (flat > 0)")

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @staticmethod
    def from_dict(d: dict) -> "TileConfig":
        return TileConfig(**d)


@triton.jit
def _activation(y, ACT: tl.constexpr):
    """Epilogue activation in fp32 (gelu is the exact erf form, like F.gelu)."""
    if ACT == 1:
        y = tl.maximum(y, 0.0)
    elif ACT == 2:
        y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))
    elif ACT == 3:
        y = y * tl.sigmoid(y)
    return y


@triton.jit
def _store_epilogue(acc, cols, n_mask, offs_m, m_mask, bias_ptr, out_ptr, stride_on,
                    stride_om, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                    WIDE_INDEX: tl.constexpr):
    """Bias, activation and the store scattered through ``cols`` (the output features
    of this block), shared by both kernels. ``acc`` is fp32 ``[BLOCK_N, BLOCK_M]``."""
    y = acc
    if HAS_BIAS:
        b = tl.load(bias_ptr + cols, mask=n_mask, other=0.0).to(tl.float32)
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
def _work_item(w, num_mb, num_cb, order_ptr, G: tl.constexpr, BLOCK_N: tl.constexpr,
               GROUP_CB: tl.constexpr):
    """Map work item ``w`` to (tile, first column in tile, M-block).

    Items are grouped ``GROUP_CB`` column blocks × all M-blocks, column block fastest,
    so programs running together share x rows (HBM once) and weights (L2)."""
    per_group = GROUP_CB * num_mb
    first_cb = (w // per_group) * GROUP_CB
    group_size = tl.minimum(num_cb - first_cb, GROUP_CB)
    local = w % per_group
    cb = tl.load(order_ptr + first_cb + local % group_size)   # LPT-sorted block id
    SUB: tl.constexpr = G // BLOCK_N
    return cb // SUB, (cb % SUB) * BLOCK_N, local // group_size


@triton.jit
def _tile_block(x_ptr, w_ptr, row_idx_ptr, row_ptr_ptr, col_map_ptr, bias_ptr, out_ptr,
                t, n0, mb, M, n_kept, stride_xk, stride_xm, stride_on, stride_om,
                G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                COLS_CONTIG: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """Compute and store one [BLOCK_N, BLOCK_M] output block of tile ``t``."""
    start = tl.load(row_ptr_ptr + t)
    k_t = tl.load(row_ptr_ptr + t + 1) - start

    offs_n = n0 + tl.arange(0, BLOCK_N)                  # column inside the tile
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
    j = t * G + offs_n
    n_mask = j < n_kept                                   # edge tile padding
    if COLS_CONTIG:
        # host checked: col_map[t*G + j] == col_map[t*G] + j and 16-aligned starts,
        # so row-major stores vectorise
        cols = tl.multiple_of(tl.load(col_map_ptr + t * G), 16) + offs_n
    else:
        cols = tl.load(col_map_ptr + j, mask=n_mask, other=0)
    _store_epilogue(acc, cols, n_mask, offs_m, m_mask, bias_ptr, out_ptr, stride_on,
                    stride_om, HAS_BIAS, ACT, WIDE_INDEX)


@triton.jit
def _tile_linear_kernel(
    x_ptr, w_ptr, row_idx_ptr, row_ptr_ptr, col_map_ptr, bias_ptr, out_ptr, order_ptr,
    M, n_kept, num_cb,
    stride_xk, stride_xm, stride_on, stride_om,
    G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr, GROUP_CB: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACT: tl.constexpr, COLS_CONTIG: tl.constexpr, WIDE_INDEX: tl.constexpr,
):
    """One program per work item; the hardware scheduler balances (launch order =
    LPT order)."""
    num_mb = tl.cdiv(M, BLOCK_M)
    t, n0, mb = _work_item(tl.program_id(0), num_mb, num_cb, order_ptr, G, BLOCK_N,
                           GROUP_CB)
    _tile_block(x_ptr, w_ptr, row_idx_ptr, row_ptr_ptr, col_map_ptr, bias_ptr, out_ptr,
                t, n0, mb, M, n_kept, stride_xk, stride_xm, stride_on, stride_om,
                G, BLOCK_N, BLOCK_M, BLOCK_K, HAS_BIAS, ACT, COLS_CONTIG, WIDE_INDEX)


@triton.jit
def _tile_linear_flat(
    x_ptr, w_ptr, row_idx_ptr, col_map_ptr, bias_ptr, out_ptr, items_ptr, progs_ptr,
    M, n_kept, stride_xk, stride_xm, stride_on, stride_om,
    G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACT: tl.constexpr, COLS_CONTIG: tl.constexpr, WIDE_INDEX: tl.constexpr,
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
    _whole_items(tl.load(progs_ptr + 2 * pid), tl.load(progs_ptr + 2 * pid + 1), items_ptr,
                 4, x_ptr, w_ptr, row_idx_ptr, col_map_ptr, bias_ptr, out_ptr, M, n_kept,
                 stride_xk, stride_xm, stride_on, stride_om, G, BLOCK_N, BLOCK_M, BLOCK_K,
                 HAS_BIAS, ACT, COLS_CONTIG, WIDE_INDEX)


@triton.jit
def _whole_items(first, steps, items_ptr, ROW: tl.constexpr, x_ptr, w_ptr, row_idx_ptr,
                 col_map_ptr, bias_ptr, out_ptr, M, n_kept, stride_xk, stride_xm,
                 stride_on, stride_om, G: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr,
                 ACT: tl.constexpr, COLS_CONTIG: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """The flattened loop: ``steps`` K-steps of the whole work items in rows
    ``first, first+1, ...`` of ``items_ptr`` (``ROW`` ints per row, the first four
    (first packed row, k_t, t*G + n0, M-block)), each item's epilogue under an ``if``.
    Kept free of anything but loads, dots and stores so that Triton pipelines it."""
    it = first - 1
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
            start = tl.load(items_ptr + ROW * it)
            k_t = tl.load(items_ptr + ROW * it + 1)
            j0 = tl.load(items_ptr + ROW * it + 2)
            mb = tl.load(items_ptr + ROW * it + 3)
        n0 = tl.multiple_of(j0 % G, BLOCK_N)             # column inside the tile
        offs_m = mb * BLOCK_M + ar_m
        m_mask = offs_m < M
        acc = _k_step(acc, x_ptr, w_ptr, row_idx_ptr, start, k_t, k, n0, offs_n, offs_k,
                      offs_m, m_mask, stride_xk, stride_xm, G, WIDE_INDEX)
        k_next = k + BLOCK_K
        done = k_next >= k_t
        k = tl.where(done, 0, k_next)
        if done:                                          # epilogue of this item
            _item_epilogue(acc, j0, n0, offs_n, offs_m, m_mask, n_kept, col_map_ptr,
                           bias_ptr, out_ptr, stride_on, stride_om, HAS_BIAS, ACT,
                           COLS_CONTIG, WIDE_INDEX)
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)


@triton.jit
def _k_step(acc, x_ptr, w_ptr, row_idx_ptr, start, k_t, k, n0, offs_n, offs_k, offs_m,
            m_mask, stride_xk, stride_xm, G: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """``acc += values[start+k : +BLOCK_K, n0 + offs_n]^T @ x[row_idx[...], offs_m]``
    for one K-step of a work item of the flattened kernels (rows past ``k_t`` are 0)."""
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
    wb = tl.load(w_ptr + w_off + (n0 + offs_n)[None, :], mask=k_mask[:, None], other=0.0)
    return tl.dot(tl.trans(wb), xb, acc)


@triton.jit
def _item_epilogue(acc, j0, n0, offs_n, offs_m, m_mask, n_kept, col_map_ptr, bias_ptr,
                   out_ptr, stride_on, stride_om, HAS_BIAS: tl.constexpr,
                   ACT: tl.constexpr, COLS_CONTIG: tl.constexpr,
                   WIDE_INDEX: tl.constexpr):
    """Store a finished work item of the flattened kernels (``j0 = t*G + n0``)."""
    j = j0 + offs_n
    n_mask = j < n_kept
    if COLS_CONTIG:
        cols = tl.multiple_of(tl.load(col_map_ptr + j0 - n0), 16) + n0 + offs_n
    else:
        cols = tl.load(col_map_ptr + j, mask=n_mask, other=0)
    _store_epilogue(acc, cols, n_mask, offs_m, m_mask, bias_ptr, out_ptr, stride_on,
                    stride_om, HAS_BIAS, ACT, WIDE_INDEX)


@triton.jit
def _tile_linear_stream_k(
    x_ptr, w_ptr, row_idx_ptr, col_map_ptr, bias_ptr, out_ptr, items_ptr, progs_ptr,
    part_ptr, flag_ptr, M, n_kept, stride_xk, stride_xm, stride_on, stride_om,
    G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACT: tl.constexpr, COLS_CONTIG: tl.constexpr, WIDE_INDEX: tl.constexpr,
):
    """The flattened kernel over a stream-K work list (:meth:`TilePlan.stream_k_for`).

    A program's rows are, in order: at most one *leading* segment (the end of an item
    that an earlier range began: store its fp32 sum into slot ``slot`` of ``part_ptr``
    ([slots, BLOCK_N*BLOCK_M]) and raise ``flag_ptr[slot]``, release), whole items
    (the pipelined loop of the flattened kernel), and at most one *finishing*
    segment (the beginning of an item: store its own sum into the slot after the
    others', wait for each of the others' flags, acquire, then add all the sums and
    run the epilogue, row chunk by row chunk). The waits and atomics stay outside the main loop:
    inside it they stop Triton from pipelining the loads. Waiting resets each flag to
    0, so all flags are 0 again when the kernel ends and the workspace needs no
    clearing between launches."""
    pid = tl.program_id(0)
    first = tl.load(progs_ptr + 3 * pid)
    last = first + tl.load(progs_ptr + 3 * pid + 1) - 1
    whole_steps = tl.load(progs_ptr + 3 * pid + 2)
    lead = items_ptr + 8 * first
    if tl.load(lead + 7) < 0:                             # leading partial segment
        acc, _j0, _n0, _offs_m, _m_mask = _segment_sum(
            lead, x_ptr, w_ptr, row_idx_ptr, M, stride_xk, stride_xm, G, BLOCK_N,
            BLOCK_M, BLOCK_K, WIDE_INDEX)
        slot = tl.load(lead + 6)
        _store_sum(part_ptr, slot, acc, BLOCK_N, BLOCK_M)
        tl.debug_barrier()                                # every thread's stores first
        tl.atomic_xchg(flag_ptr + slot, 1, sem="release")
        first += 1
    _whole_items(first, whole_steps, items_ptr, 8, x_ptr, w_ptr, row_idx_ptr, col_map_ptr,
                 bias_ptr, out_ptr, M, n_kept, stride_xk, stride_xm, stride_on, stride_om,
                 G, BLOCK_N, BLOCK_M, BLOCK_K, HAS_BIAS, ACT, COLS_CONTIG, WIDE_INDEX)
    tail = items_ptr + 8 * last
    partials = tl.load(tail + 7)
    if partials > 0:                                      # finishing segment
        acc, j0, n0, offs_m, m_mask = _segment_sum(
            tail, x_ptr, w_ptr, row_idx_ptr, M, stride_xk, stride_xm, G, BLOCK_N,
            BLOCK_M, BLOCK_K, WIDE_INDEX)
        # its own sum goes to the slot after the others': the sum of all of them is
        # then read back in row chunks, so no second [BLOCK_N, BLOCK_M] fp32 tile is
        # ever live next to acc (that doubled the registers: 233 instead of 125 per
        # thread, one program per SM instead of two, bench/NOTES_tile.md round 6)
        slot = tl.load(tail + 6)
        _store_sum(part_ptr, slot + partials, acc, BLOCK_N, BLOCK_M)
        for s in range(0, partials):
            while tl.atomic_cas(flag_ptr + slot + s, 1, 0, sem="acquire") != 1:
                pass
        tl.debug_barrier()             # the other threads' own-sum stores, the flags
        _epilogue_from_slots(part_ptr, slot, partials + 1, j0, n0, offs_m, m_mask, n_kept,
                             col_map_ptr, bias_ptr, out_ptr, stride_on, stride_om,
                             BLOCK_N, BLOCK_M, 32, HAS_BIAS, ACT, COLS_CONTIG,
                             WIDE_INDEX)


@triton.jit
def _store_sum(part_ptr, slot, acc, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    """Store a segment's fp32 sum into its slot (offsets computed here, next to the
    store, so that Triton computes them in acc's own layout instead of converting
    acc: a conversion keeps a second copy of the tile in registers)."""
    offs = tl.arange(0, BLOCK_N)[:, None] * BLOCK_M + tl.arange(0, BLOCK_M)[None, :]
    tl.store(part_ptr + slot * (BLOCK_N * BLOCK_M) + offs, acc)


@triton.jit
def _epilogue_from_slots(part_ptr, first_slot, n_slots, j0, n0, offs_m, m_mask, n_kept,
                         col_map_ptr, bias_ptr, out_ptr, stride_on, stride_om,
                         BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                         CHUNK: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                         COLS_CONTIG: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """Epilogue of a split item: sum its ``n_slots`` fp32 partial sums (in slot order,
    so the result is the same on every run) ``CHUNK`` rows at a time, then bias,
    activation and the store of those rows."""
    ar_m = tl.arange(0, BLOCK_M)
    for c in tl.static_range(0, BLOCK_N, CHUNK):
        offs_n = c + tl.arange(0, CHUNK)
        offs = offs_n[:, None] * BLOCK_M + ar_m[None, :]
        y = tl.zeros((CHUNK, BLOCK_M), dtype=tl.float32)
        for s in range(0, n_slots):
            # .cg: written by other SMs; do not read them through L1
            y += tl.load(part_ptr + (first_slot + s) * (BLOCK_N * BLOCK_M) + offs,
                         cache_modifier=".cg")
        _item_epilogue(y, j0, n0, offs_n, offs_m, m_mask, n_kept, col_map_ptr, bias_ptr,
                       out_ptr, stride_on, stride_om, HAS_BIAS, ACT, COLS_CONTIG,
                       WIDE_INDEX)


@triton.jit
def _segment_sum(row, x_ptr, w_ptr, row_idx_ptr, M, stride_xk, stride_xm,
                 G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_K: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """fp32 sum of one stream-K segment (a row of :meth:`TilePlan.stream_k_for`);
    also returns where its item lives: ``j0, n0, offs_m, m_mask``."""
    start = tl.load(row)
    k_t = tl.load(row + 1)
    j0 = tl.load(row + 2)
    mb = tl.load(row + 3)
    k0 = tl.load(row + 4)
    n_steps = tl.load(row + 5)
    n0 = tl.multiple_of(j0 % G, BLOCK_N)
    offs_n = tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for k in range(k0, k0 + n_steps * BLOCK_K, BLOCK_K):
        acc = _k_step(acc, x_ptr, w_ptr, row_idx_ptr, start, k_t, k, n0, offs_n, offs_k,
                      offs_m, m_mask, stride_xk, stride_xm, G, WIDE_INDEX)
    return acc, j0, n0, offs_m, m_mask


def launch_tile_kernel(x2: Tensor, x_feature_major: bool, values: Tensor, row_idx: Tensor,
                       row_ptr: Tensor, col_map: Tensor, bias: Optional[Tensor],
                       out2: Tensor, out_feature_major: bool, order: Tensor,
                       cols_contig: bool, activation: str, cfg: TileConfig,
                       schedule: Optional[tuple] = None) -> None:
    """Run the kernel on 2-D views.

    ``x2`` is ``[K, M]`` when ``x_feature_major`` else ``[M, K]``; ``out2`` likewise
    ``[N, M]`` or ``[M, N]``. ``order`` holds the column-block ids (``G // block_n``
    blocks per tile) in launch order. Writes only the columns listed in ``col_map``.
    ``schedule`` = (items, progs) from :meth:`TilePlan.schedule_for`, needed when
    ``cfg.flat``, or (items, progs, slots) from :meth:`TilePlan.stream_k_for` when
    ``cfg.stream_k``.
    """
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
    num_cb = order.numel()
    if M == 0 or num_cb == 0:
        return
    wide = max(x2.numel(), out2.numel(), values.numel()) >= 2**31 - 1
    b_arg = bias if bias is not None else values
    strides = (stride_xk, stride_xm, stride_on, stride_om)
    options = dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    # constexprs in signature order (triton_launch relaunches positionally)
    if cfg.flat:
        constexprs = dict(G=G, BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m,
                          BLOCK_K=cfg.block_k, HAS_BIAS=bias is not None,
                          ACT=ACT_CODES[activation], COLS_CONTIG=cols_contig,
                          WIDE_INDEX=wide)
        if cfg.stream_k:
            items, progs, slots = schedule
            parts, flags = stream_k_workspace(out2.device, slots,
                                              cfg.block_n * cfg.block_m)
            launch(_tile_linear_stream_k, (progs.shape[0],),
                   (x2, values, row_idx, col_map, b_arg, out2, items, progs, parts, flags),
                   (M, col_map.numel(), *strides), constexprs, **options)
            return
        items, progs = schedule
        launch(_tile_linear_flat, (progs.shape[0],),
               (x2, values, row_idx, col_map, b_arg, out2, items, progs),
               (M, col_map.numel(), *strides), constexprs, **options)
        return
    constexprs = dict(G=G, BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
                      GROUP_CB=cfg.group_cb, HAS_BIAS=bias is not None,
                      ACT=ACT_CODES[activation], COLS_CONTIG=cols_contig, WIDE_INDEX=wide)
    # -(-a // b): triton.cdiv is a jit function, ~5 µs per host call
    launch(_tile_linear_kernel, (num_cb * -(-M // cfg.block_m),),
           (x2, values, row_idx, row_ptr, col_map, b_arg, out2, order),
           (M, col_map.numel(), num_cb, *strides), constexprs, **options)


#: (device, stream) -> (fp32 partial sums, int32 flags) of the stream-K kernel
_workspaces: dict = {}


def stream_k_workspace(device: torch.device, slots: int,
                       slot_elems: int) -> tuple[Tensor, Tensor]:
    """Partial-sum slots and their flags for a stream-K launch on the current stream.

    Kept per (device, stream): launches on one stream run in order, so they can share
    one workspace (the kernel leaves every flag at 0 when it ends); launches on two
    streams could run at the same time, so they must not. Grown, never shrunk. During
    CUDA graph capture a missing or too small workspace is allocated for that graph
    only (not kept): its zero fill is then a node of the graph, replayed before the
    kernel, whereas a kept one would be used eagerly before it was ever filled."""
    key = (device, stream_handle(device))
    ws = _workspaces.get(key)
    if ws is not None and ws[0].numel() >= slots * slot_elems and ws[1].numel() >= slots:
        return ws
    ws = (torch.empty(max(1, slots * slot_elems), dtype=torch.float32, device=device),
          torch.zeros(max(1, slots), dtype=torch.int32, device=device))
    if device.type != "cuda" or not torch.cuda.is_current_stream_capturing():
        _workspaces[key] = ws
    return ws


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
