"""Host-side facts about one packed TW weight, computed once and cached.

The kernel needs a launch order (column blocks sorted by kept-K, longest first), to
know whether ``col_map`` is contiguous per tile, and which output features have no
column (they get ``activation(bias)`` only). Computing these reads ``row_ptr`` and
``col_map`` on the host — a device sync — so it happens once per packed weight and is
cached, keyed on the tensors' storage and version and validated with a weak reference
(so a new tensor reusing a freed address is never mistaken for the old one).

No triton here: importable on a CPU-only machine.
"""
from __future__ import annotations

import hashlib
import heapq
import weakref
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

_MAX_ENTRIES = 512


@dataclass
class TilePlan:
    """What the launcher needs to know about one packed weight."""

    G: int
    num_tiles: int
    n_kept: int
    out_features: int
    k_counts: list[int]              # k_t per tile
    first_cols: list[int]            # col_map[t*G] per tile (0 for a tile past col_map)
    tile_order: Tensor               # int64 [T] (device): tiles by k_t descending
    cols_contig: bool                # col_map[t*G+j] == col_map[t*G]+j, 16-aligned
    tma_store_ok: bool               # whole-tile blocks can be stored (_tile_rows_storable)
    tile_starts_aligned: bool        # every tile's first output feature % 8 == 0
    cols_increasing: bool            # col_map strictly increasing (the packer's order)
    missing: Optional[Tensor]        # int64 (device) output features not in col_map
    profile: str                     # hash of the sorted k_t profile
    _col_map_host: Optional[Tensor] = None   # int64 (CPU) copy of col_map
    _orders: dict = field(default_factory=dict)
    _schedules: dict = field(default_factory=dict)
    _workspaces: dict = field(default_factory=dict)

    def blocks_for(self, block_n: int, device) -> Tensor:
        """The grid kernel's column blocks in launch order, as int32 [num_cb, 4] =
        (first packed row, k_t, t*G + n0, col_map[t*G] + n0) for sub-blocks of
        ``block_n`` columns (the first three fields as in :meth:`schedule_for`'s
        items; the fourth is the block's first output feature when
        :attr:`cols_contig`).

        Why a table: a program then knows where its rows start, and which output
        features (so which bias values) it has, after one load. Reading a block id, then
        ``row_ptr[t]``, then ``col_map`` and the bias in the epilogue were dependent
        loads of about 0.25 µs each in a program of 5–13 µs on the BERT shapes (H200,
        NOTES_tile.md round 7)."""
        key = ("blocks", block_n, device)
        if key not in self._orders:
            sub = self.G // block_n
            starts = self._tile_starts()
            rows = [(starts[t], self.k_counts[t], t * self.G + s * block_n,
                     self.first_cols[t] + s * block_n)
                    for t in self._tile_order_host() for s in range(sub)]
            table = torch.tensor(rows, dtype=torch.int32).reshape(-1, 4)   # [0, 4] if none
            self._orders[key] = table.to(device)
        return self._orders[key]

    def split_blocks_for(self, block_n: int, block_k: int, split: int,
                         device) -> "SplitBlocks":
        """The grid kernel's column blocks with the long ones cut along K into parts
        (split-K), as int32 [n, 8] rows = (first packed row of the part, rows of the
        part, t*G + n0, col_map[t*G] + n0, group, parts in the group, part index,
        first workspace row of the group); group = -1 for an uncut block.

        Why: at small M the grid kernel leaves the GPU mostly idle (64 programs for
        132 SMs at 16×4096→4096), and with uneven tiles the heaviest tile's programs
        end last. Cutting a block into parts of at most ``ceil(mean_steps / split)``
        K-steps (``mean_steps`` from the mean kept-K) gives more, shorter programs;
        the last part of a group to finish adds the parts' fp32 sums and runs the
        epilogue (``_finish_split_part`` in :mod:`triton_tile`). ``split`` = 1 cuts
        only blocks longer than the mean. That fix-up costs 1–1.5 µs of latency at
        M = 16 and more than the balance gains at BERT shapes, where each part's fp32
        sum is as large as its inputs (bench/NOTES_tile.md round 10), so kernel
        choice offers split configs for M <= 64 only.

        Rows are sorted by part length, longest first (stable: ties keep the
        :meth:`blocks_for` order), the launch order the grid kernel wants."""
        key = ("split", block_n, block_k, split, device)
        if key not in self._orders:
            self._orders[key] = self._build_split_blocks(block_n, block_k, split, device)
        return self._orders[key]

    def _build_split_blocks(self, block_n, block_k, split, device) -> "SplitBlocks":
        mean_steps = max(1, -(-int(self.mean_k) // block_k))
        cap = max(1, -(-mean_steps // max(1, split)))
        rows, groups, part_rows = [], 0, 0
        for start, k_t, j0, c0 in self.blocks_for(block_n, "cpu").tolist():
            steps = max(1, -(-k_t // block_k))
            parts = -(-steps // cap)
            if parts == 1:
                rows.append((start, k_t, j0, c0, -1, 1, 0, 0))
                continue
            step0 = 0
            for p in range(parts):
                n_steps = steps // parts + (p < steps % parts)
                k0 = step0 * block_k
                rows.append((start + k0, min(k_t, k0 + n_steps * block_k) - k0, j0, c0,
                             groups, parts, p, part_rows))
                step0 += n_steps
            groups += 1
            part_rows += parts
        rows.sort(key=lambda r: -r[1])                     # stable
        table = torch.tensor(rows, dtype=torch.int32).reshape(-1, 8)
        return SplitBlocks(table.to(device), groups, part_rows,
                           max((r[5] for r in rows), default=1))

    def split_workspace(self, blocks: "SplitBlocks", block_n: int, block_m: int, M: int,
                        device) -> tuple[Tensor, Tensor]:
        """(partial sums fp32 [part rows × M-blocks, block_n × block_m], counters int32
        [groups × M-blocks]) for :meth:`split_blocks_for`'s table at ``M`` tokens.

        Kept with the plan, so a layer reuses its own: the kernel leaves every counter
        at 0 again and overwrites each partial sum before reading it, so neither needs
        clearing between launches. Consequence: one layer must not run on two streams
        at the same time. Under CUDA graph capture a missing workspace is allocated
        (and zeroed inside the graph) but not kept, as nothing runs before replay."""
        num_mb = -(-M // block_m)
        key = (id(blocks), block_n, block_m, num_mb, device)
        hit = self._workspaces.get(key)
        if hit is not None:
            return hit
        partials = torch.empty(max(1, blocks.part_rows * num_mb), block_n * block_m,
                               dtype=torch.float32, device=device)
        counters = torch.zeros(max(1, blocks.groups * num_mb), dtype=torch.int32,
                               device=device)
        capturing = (torch.device(device).type == "cuda"
                     and torch.cuda.is_current_stream_capturing())
        if not capturing:
            self._workspaces[key] = (partials, counters)
        return partials, counters

    def workspace_keys(self) -> set:
        """Keys of the split workspaces this plan keeps (see :meth:`release_workspaces`)."""
        return set(self._workspaces)

    def release_workspaces(self, keep: set) -> None:
        """Drop the kept split workspaces whose keys are not in ``keep``: kernel choice
        frees those its candidates allocated (never one that existed before it, which
        a captured CUDA graph may still use)."""
        for k in self.workspace_keys() - keep:
            del self._workspaces[k]

    def schedule_for(self, block_n: int, block_m: int, block_k: int, M: int,
                     programs: int, group_cb: int, device) -> tuple[Tensor, Tensor]:
        """Static work list of the flattened persistent kernel (cached per shape).

        Work items (column block, M-block) are taken in the launch order of the
        non-persistent kernel (column blocks by kept-K descending, in groups of
        ``group_cb`` blocks × all M-blocks, block fastest, so programs running at the
        same time share x rows) and each goes to the program that is least loaded so
        far (greedy list scheduling, cost = K-steps + 1 for the epilogue): this is the
        longest-first balance the hardware scheduler gives the non-persistent grid,
        fixed on the host. Returns ``items`` int32 [n, 4] = (first packed row, k_t,
        t*G + n0, M-block) grouped per program and ``progs`` int32 [P, 2] =
        (first item, total K-steps of the program)."""
        key = (block_n, block_m, block_k, M, programs, group_cb, device)
        hit = self._schedules.get(key)
        if hit is not None:
            return hit
        sub = self.G // block_n
        num_mb = -(-M // block_m)
        starts = self._tile_starts()
        order = [t * sub + s for t in self._tile_order_host() for s in range(sub)]
        n_items = len(order) * num_mb
        P = max(1, min(programs, n_items))
        heap = [(0, p) for p in range(P)]
        per_prog: list[list] = [[] for _ in range(P)]
        steps = [0] * P
        for g0 in range(0, len(order), group_cb):
            grp = order[g0:g0 + group_cb]
            for mb in range(num_mb):
                for cb in grp:
                    t, n0 = divmod(cb, sub)
                    k_t = self.k_counts[t]
                    n_steps = max(1, -(-k_t // block_k))
                    load, p = heapq.heappop(heap)
                    per_prog[p].append((starts[t], k_t, t * self.G + n0 * block_n, mb))
                    steps[p] += n_steps
                    heapq.heappush(heap, (load + n_steps + 1, p))
        flat, progs = [], []
        for p in range(P):
            progs.append((len(flat), steps[p]))
            flat.extend(per_prog[p])
        items = torch.tensor(flat or [(0, 0, 0, 0)], dtype=torch.int32).reshape(-1, 4)
        out = (items.contiguous().to(device),
               torch.tensor(progs, dtype=torch.int32).reshape(-1, 2).contiguous()
               .to(device))
        self._schedules[key] = out
        return out

    def can_bulk_store(self, out_feature_major: bool) -> bool:
        """Whether the sm90 kernel may write this weight's output with bulk tensor
        stores of whole tile blocks: :attr:`tma_store_ok`, and for a row-major output
        also :attr:`tile_starts_aligned` (there the tile's first feature is the box's
        innermost coordinate, which must be 16-byte aligned)."""
        return self.tma_store_ok and (out_feature_major or self.tile_starts_aligned)

    def sm90_store(self, out_feature_major: bool, requested: str = "") -> str:
        """How the sm90 kernel's epilogue writes this weight's output
        (:data:`sm90_tile.STORE_CODES`): ``requested`` (a :attr:`TileConfig.store`)
        when given, else the first of these that applies (:meth:`sm90_stores`):

        * ``"bulk"``: bulk tensor stores of whole tile blocks (:meth:`can_bulk_store`);
        * ``"span"``: a row-major output whose tiles cannot be bulk-stored (column
          pruning left gaps among a tile's features, or tile starts are unaligned).
          Each 64-feature block writes whole row segments: its features and the pruned
          ones up to the next block's first feature, so the kernel writes every output
          feature (:meth:`kernel_writes_missing`). Needs ``col_map`` increasing, as the
          packer makes it;
        * ``"direct"``: stores from registers of the ``col_map`` features only, which
          always applies (pruned-away features are then written by a launch after the
          kernel).

        Which of ``"span"`` and ``"direct"`` is faster depends on the shape
        (bench/NOTES_tile.md rounds 18 and 20), so kernel choice times both
        (:func:`dispatch.with_store_variants`). Raises ``ValueError`` when ``requested``
        does not apply to this weight and layout."""
        stores = self.sm90_stores(out_feature_major)
        if not requested:
            return stores[0]
        if requested not in stores:
            raise ValueError(f"sm90 store {requested!r} does not apply to this weight "
                             f"({'feature' if out_feature_major else 'row'}-major output); "
                             f"it allows {stores}")
        return requested

    def sm90_stores(self, out_feature_major: bool) -> tuple[str, ...]:
        """The epilogue stores the sm90 kernel may use for this weight and layout: the
        default (:meth:`sm90_store`) first, then ``"direct"``, which always applies.
        ``"span"`` is offered only where bulk stores do not apply: where both would,
        bulk stores are the path the GPU tests cover."""
        if self.can_bulk_store(out_feature_major):
            return ("bulk", "direct")
        if not out_feature_major and self.cols_increasing and self.n_kept > 0:
            return ("span", "direct")
        return ("direct",)

    @staticmethod
    def kernel_writes_missing(store: str) -> bool:
        """Whether the sm90 kernel with epilogue ``store`` also writes the pruned-away
        output features (:attr:`missing`), so no separate write is needed."""
        return store == "span"

    def sm90_store_args(self, out_feature_major: bool, device, requested: str = "") -> tuple:
        """``(store, out_pos)`` for :func:`sm90_tile.launch` and
        :func:`sm90_tile.native_entry`: :meth:`sm90_store`, and the
        :meth:`out_positions` table where that store reads it (else None)."""
        store = self.sm90_store(out_feature_major, requested)
        return store, self.out_positions(device) if store == "span" else None

    def out_positions(self, device) -> Tensor:
        """int32 ``[out_features]``: each output feature's position in ``col_map``, -1
        for a pruned-away one (the ``"span"`` epilogue's lookup). Cached per device."""
        key = ("out_pos", str(device))
        if key not in self._orders:
            pos = torch.full((self.out_features,), -1, dtype=torch.int32)
            if self._col_map_host is not None and self.n_kept:
                pos[self._col_map_host] = torch.arange(self.n_kept, dtype=torch.int32)
            self._orders[key] = pos.to(device)
        return self._orders[key]

    def _tile_starts(self) -> list[int]:
        """First packed row of each tile (``row_ptr`` on the host)."""
        starts = [0]
        for c in self.k_counts:
            starts.append(starts[-1] + c)
        return starts

    def _tile_order_host(self) -> list[int]:
        if "host" not in self._orders:
            self._orders["host"] = self.tile_order.tolist()
        return self._orders["host"]

    @property
    def mean_k(self) -> float:
        return sum(self.k_counts) / max(len(self.k_counts), 1)

    @property
    def max_k(self) -> int:
        return max(self.k_counts, default=0)


@dataclass(frozen=True)
class SplitBlocks:
    """:meth:`TilePlan.split_blocks_for`'s table with its sizes: ``groups`` cut column
    blocks (one counter per M-block each), ``part_rows`` parts over all groups (one
    partial sum per M-block each), ``max_parts`` the most parts of one block."""

    table: Tensor
    groups: int
    part_rows: int
    max_parts: int = 1

    def workspace_bytes(self, block_n: int, block_m: int, M: int) -> int:
        num_mb = -(-M // block_m)
        return self.part_rows * num_mb * block_n * block_m * 4 + self.groups * num_mb * 4


_plans: dict[tuple, tuple] = {}


def get_plan(row_ptr: Tensor, col_map: Tensor, out_features: int, G: int) -> TilePlan:
    """The cached :class:`TilePlan` for these packed tensors (built on first use)."""
    key = (row_ptr.data_ptr(), row_ptr._version, row_ptr.numel(), col_map.data_ptr(),
           col_map._version, col_map.numel(), out_features, G)
    hit = _plans.get(key)
    if hit is not None and hit[0]() is row_ptr and hit[1]() is col_map:
        return hit[2]
    plan = build_plan(row_ptr, col_map, out_features, G)
    if len(_plans) >= _MAX_ENTRIES:
        _plans.clear()
    _plans[key] = (weakref.ref(row_ptr), weakref.ref(col_map), plan)
    return plan


def _first_cols(cm: Tensor, G: int, num_tiles: int) -> list[int]:
    """``col_map[t*G]`` per tile, 0 for a tile that starts past ``col_map``."""
    first = cm[::G].tolist()
    return (first + [0] * num_tiles)[:num_tiles]


def build_plan(row_ptr: Tensor, col_map: Tensor, out_features: int, G: int) -> TilePlan:
    """Compute a :class:`TilePlan` (one host round trip)."""
    rp = row_ptr.detach().to("cpu", torch.int64)
    cm = col_map.detach().to("cpu", torch.int64)
    counts = (rp[1:] - rp[:-1])
    num_tiles = counts.numel()
    # stable sort: equal tiles keep their natural order (better L2 locality)
    order = torch.sort(counts, descending=True, stable=True).indices
    missing = None
    if cm.numel() < out_features:
        present = torch.zeros(out_features, dtype=torch.bool)
        present[cm] = True
        missing = torch.nonzero(~present).flatten().to(row_ptr.device)
    profile = hashlib.sha1(
        torch.sort(counts).values.numpy().tobytes() + f"{G}".encode()).hexdigest()[:16]
    return TilePlan(G=G, num_tiles=num_tiles, n_kept=cm.numel(), out_features=out_features,
                    k_counts=counts.tolist(),
                    first_cols=_first_cols(cm, G, num_tiles),
                    tile_order=order.to(row_ptr.device),
                    cols_contig=_cols_contiguous(cm, G),
                    tma_store_ok=_tile_rows_storable(cm, G, out_features),
                    tile_starts_aligned=cm.numel() > 0 and bool(torch.all(cm[::G] % 8 == 0)),
                    cols_increasing=bool(torch.all(cm[1:] > cm[:-1])),
                    missing=missing, profile=profile, _col_map_host=cm)


def _tile_rows_storable(cm: Tensor, G: int, out_features: int) -> bool:
    """True when a store of a tile's whole G-row block (the sm90 kernel's bulk tensor
    store epilogue) writes only that tile's own output features: each tile's features
    are consecutive, and the edge tile's padding rows lie past the last output feature
    (where the tensor map clips them)."""
    n = cm.numel()
    if n == 0 or not _tiles_consecutive(cm, G):
        return False
    last = (n - 1) // G * G
    return n % G == 0 or int(cm[last]) + (n - last) == out_features


def _tiles_consecutive(cm: Tensor, G: int) -> bool:
    """Each tile's output features are consecutive: col_map[t*G + j] == col_map[t*G] + j."""
    pos = torch.arange(cm.numel())
    return bool(torch.all(cm == cm[(pos // G) * G] + pos % G))


def _cols_contiguous(cm: Tensor, G: int) -> bool:
    """True when each tile's columns are consecutive output features starting at a
    multiple of 16 — then the kernel computes them instead of loading ``col_map`` and
    row-major stores vectorise."""
    if cm.numel() == 0:
        return False
    return _tiles_consecutive(cm, G) and bool(torch.all(cm[::G] % 16 == 0))
