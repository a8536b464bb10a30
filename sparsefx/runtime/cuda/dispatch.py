"""Per-layer kernel choice for ``sparsefx::tile_linear`` on CUDA, with dense fallback.

Why measure instead of model: whether a tile layer beats cuBLAS depends on its shape,
its per-tile density profile and the GPU, and the margin is often small (BERT-size
layers, low sparsity). So the first time a layer's shape is seen, :func:`decide` times
every candidate kernel configuration and the dense path (cuBLAS on the unpacked weight)
at the real shape and keeps the fastest. A sparse kernel that is not faster than dense
is never used.

Decisions are keyed by GPU name, shape (M, K, N, G), dtype, layout, epilogue and a hash
of the per-tile density profile, kept in memory and persisted as JSON in
``$SPARSEFX_CACHE_DIR/tile_decisions.json`` (default ``~/.cache/sparsefx/``) so a later
process reuses them without timing. :func:`decisions` lists every decision used by this
process (for the pass log: per layer sparse ms, dense ms, choice).

This module needs triton only inside the functions that launch kernels; it is imported
by :mod:`sparsefx.runtime.cuda` only after triton was found.
"""
from __future__ import annotations

import json
import os
import statistics
import threading
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from sparsefx.patterns.tile import unpack_tensors
from sparsefx.runtime.cuda.plan import TilePlan, get_plan
from sparsefx.runtime.cuda import eager_fastpath, sm90_dense, sm90_tile
from sparsefx.runtime.cuda.missing_features import fill_missing
from sparsefx.runtime.cuda.triton_tile import TileConfig, num_sms, tile_kernel_launch
from sparsefx.runtime.cuda.transpose import transpose_2d
from sparsefx.runtime.cuda.triton_dense import DenseConfig, dense_configs, dense_fm_linear, \
    eager_launch, mm_then_epilogue
from sparsefx.runtime.cuda.triton_launch import next_power_of_2
from sparsefx.runtime.ops import _check_tile_args, _out_shape, apply_activation

#: bump when kernels change so stale on-disk decisions are not reused
# v18: sm90 candidates include cooperative [128, 384] items from M = 8192 on;
# v17: row-major layers whose sm90 default is the row-segment epilogue also time the
# sm90 kernel with direct stores plus the pruned-feature launch (TileConfig.store);
# v16: the tile kernels' GELU epilogue is a polynomial without erf
# (runtime/gelu_polynomial.py), the sm90 kernel's SiLU a fast division;
# v15: the sm90 kernel writes row-major outputs that bulk stores cannot write by whole
# row segments, pruned-away features included (TilePlan.sm90_store "span");
# v14: pruned-away output features are written by one Triton launch
# (missing_features), which changes the sparse time of layers that have them;
# v13: feature-major layers also time the CUTLASS dense kernel (sm90_dense);
# v12: kernel choice's final rounds (the fastest sparse configs and dense variants,
# interleaved, median of three), and the sm90 kernel skips the all-zero 16-row slices
# of an item's last K-step;
# v11: a discarded warm-up timing before the first pass of kernel choice;
# v10: split-K candidates of the grid kernel (TileConfig.split);
# v9: feature-major layers also time cuBLAS's bare product plus a Triton bias pass,
# and the Triton kernels use programmatic dependent launch on Hopper;
# v8: feature-major layers also time the dense Triton kernel (triton_dense);
# v7: the grid kernel reads its column blocks from a table (TilePlan.blocks_for);
# v6: two-pass timing in kernel choice; v5: sm90 producer rework and bulk-store
# epilogue; v4: sm90 CUDA C++ candidates; v3: CUDA graphs
KERNEL_VERSION = "tile-triton-v18"
CACHE_ENV = "SPARSEFX_CACHE_DIR"
_SUPPORTED = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------- decisions
@dataclass
class Decision:
    """The kernel chosen for one layer shape, with the times that justified it."""

    key: str
    choice: str                         # "sparse" or "dense"
    sparse_ms: Optional[float]          # best sparse candidate (None: none ran)
    dense_ms: Optional[float]
    config: Optional[TileConfig]        # best sparse config (also kept when dense wins)
    shape: dict = field(default_factory=dict)
    candidates: list = field(default_factory=list)   # [(config dict, ms)]
    measured: bool = True               # False: default taken without timing
    dense_variant: str = "direct"       # how dense runs: see DENSE_VARIANTS

    @property
    def speedup(self) -> Optional[float]:
        """dense time / time of the chosen path (≥ 1 whenever measured)."""
        if not self.sparse_ms or not self.dense_ms:
            return None
        return self.dense_ms / (self.sparse_ms if self.choice == "sparse" else self.dense_ms)

    def to_dict(self) -> dict:
        return {"key": self.key, "choice": self.choice, "sparse_ms": self.sparse_ms,
                "dense_ms": self.dense_ms,
                "config": None if self.config is None else self.config.to_dict(),
                "shape": self.shape, "candidates": self.candidates,
                "measured": self.measured, "dense_variant": self.dense_variant}

    @staticmethod
    def from_dict(d: dict) -> "Decision":
        cfg = d.get("config")
        return Decision(key=d["key"], choice=d["choice"], sparse_ms=d.get("sparse_ms"),
                        dense_ms=d.get("dense_ms"),
                        config=None if cfg is None else TileConfig.from_dict(cfg),
                        shape=d.get("shape", {}), candidates=d.get("candidates", []),
                        measured=d.get("measured", True),
                        dense_variant=d.get("dense_variant", "direct"))


_lock = threading.Lock()
_memory: dict[str, Decision] = {}       # every decision known (disk + new)
_used: dict[str, Decision] = {}         # decisions this process used, in order
_disk_loaded = False
_fast: dict[tuple, Decision] = {}       # per-call lookup: (plan, x meta, ...) -> decision
#: fast key -> _EagerRunner, or None where a layer's calls cannot be replayed
_runners: dict[tuple, Optional["_EagerRunner"]] = {}
#: (fast key, ids of the layer's tensors) already offered to the C++ eager path
_cpp_offers: dict[tuple, None] = {}
_MAX_RUNNERS = 4096


def cache_path() -> Path:
    """Where decisions persist: ``$SPARSEFX_CACHE_DIR`` or ``~/.cache/sparsefx``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "sparsefx")
    return Path(root) / "tile_decisions.json"


def _load_disk() -> None:
    global _disk_loaded
    if _disk_loaded:
        return
    _disk_loaded = True
    path = cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return      # no cache yet, or unreadable: decide again
    for d in data.get("decisions", []):
        try:
            _memory.setdefault(d["key"], Decision.from_dict(d))
        except (KeyError, TypeError):
            continue


def _save_disk() -> None:
    """Write all measured decisions atomically (a crash never leaves half a file)."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        payload = {"version": KERNEL_VERSION,
                   "decisions": [d.to_dict() for d in _memory.values() if d.measured]}
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass        # a read-only home must not break inference


def decisions() -> list[Decision]:
    """Every decision this process has used, in first-use order (for the pass log)."""
    return list(_used.values())


def clear_decisions(disk: bool = False) -> None:
    """Forget decisions (in memory; on disk too with ``disk=True``)."""
    global _disk_loaded
    with _lock:
        _memory.clear()
        _used.clear()
        _forget_fast_paths()
        _disk_loaded = disk      # after a disk wipe there is nothing to reload
        if disk:
            try:
                cache_path().unlink()
            except OSError:
                pass


def _forget_fast_paths() -> None:
    _fast.clear()
    _runners.clear()
    _cpp_offers.clear()
    eager_fastpath.clear()


_gpu_names: dict = {}


def _gpu_name(device: torch.device) -> str:
    """GPU model name, cached (the driver query costs microseconds per call)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _gpu_names:
        _gpu_names[index] = torch.cuda.get_device_name(index).replace(" ", "_")
    return _gpu_names[index]


def decision_key(M: int, K: int, N: int, plan: TilePlan, dtype: torch.dtype,
                 feature_major: bool, activation: str, has_bias: bool,
                 device: torch.device) -> str:
    gpu = _gpu_name(device)
    return (f"{KERNEL_VERSION}|{gpu}|M{M}|K{K}|N{N}|G{plan.G}|T{plan.num_tiles}|"
            f"nk{plan.n_kept}|{str(dtype).replace('torch.', '')}|"
            f"{'fm' if feature_major else 'rm'}|{activation}|b{int(has_bias)}|"
            f"c{int(plan.cols_contig)}|p{plan.profile}")


# --------------------------------------------------------------------------- candidates
def candidate_configs(M: int, G: int, feature_major: bool) -> list[TileConfig]:
    """Configurations worth timing for ``M`` tokens and tile width ``G``.

    Small M is memory bound on the weights: narrow column blocks (``block_n < G``) make
    enough programs to fill the GPU. Large M is compute bound: wide blocks, deep
    pipelines. Row-major layers also get two configs that gather straight from
    ``x [M, K]`` (no transpose), which win only when M is tiny.
    """
    if M <= 64:
        bm = max(16, next_power_of_2(M))
        base = [TileConfig(bn, bm, bk, 4, 4) for bn in (16, 32, 64) for bk in (64, 128)]
        # split-K: a few dozen programs would leave most SMs idle (NOTES_tile round 10)
        base += [TileConfig(64, bm, 128, 4, 4, split=2),
                 TileConfig(64, bm, 128, 4, 4, split=4),
                 TileConfig(32, bm, 128, 4, 4, split=4)]
    elif M <= 1024:
        base = [TileConfig(64, 64, 64, 4, 4), TileConfig(128, 64, 64, 4, 4),
                TileConfig(64, 128, 64, 4, 4), TileConfig(128, 128, 64, 8, 3),
                TileConfig(128, 128, 64, 4, 4),
                TileConfig(64, 64, 64, 4, 4, flat=4), TileConfig(64, 128, 64, 4, 4, flat=2)]
    else:
        # pruned by the 2026-11-21 run 3 sweep (bench/NOTES_tile.md): configs that won
        # no case, or came within noise of a winner, were dropped
        base = [TileConfig(128, 128, 64, 4, 4), TileConfig(128, 128, 64, 8, 3),
                TileConfig(128, 256, 64, 8, 3, group_cb=32),
                TileConfig(128, 256, 64, 8, 4, group_cb=32),
                TileConfig(64, 128, 64, 4, 4), TileConfig(64, 64, 64, 4, 4),
                # flattened persistent kernel (one loop over all K-steps of a
                # program's work items): no per-item pipeline fill
                TileConfig(128, 128, 64, 8, 3, group_cb=32, flat=2),
                TileConfig(128, 128, 64, 8, 3, group_cb=8, flat=2),
                TileConfig(128, 128, 64, 8, 4, group_cb=32, flat=2),
                TileConfig(128, 128, 32, 8, 5, group_cb=32, flat=2),
                TileConfig(128, 256, 64, 8, 4, group_cb=32, flat=1),
                TileConfig(64, 128, 64, 4, 3, flat=3),
                TileConfig(64, 128, 64, 4, 4, flat=3)]
    out = [c for c in base if c.block_n <= G and G % c.block_n == 0]
    if not feature_major:
        direct = [TileConfig(c.block_n, c.block_m, c.block_k, c.num_warps, c.num_stages,
                             c.group_cb, transpose_x=False, flat=c.flat, split=c.split)
                  for c in out[:2]]
        out = out + direct
    return _dedupe(out + sm90_configs(M, G))


def sm90_configs(M: int, G: int) -> list[TileConfig]:
    """Candidates of the Hopper CUDA C++ kernel (:mod:`sm90_tile`) when its library
    loads on this GPU (compute capability 9.0) and ``G % 64 == 0``: cooperative
    [BN, 256] items, ping-pong [BN, 128] items, and from M = 8192 on cooperative
    [128, 384] items; one persistent CTA per SM. Skipped for M <= 64, where a 128-token
    block wastes most of the tensor-core work. :func:`decide` keeps whichever candidate
    measures fastest (bench/NOTES_tile.md rounds 3-4).

    Why 384-token items only from M = 8192: they reload each weight block 2/3 as often
    and won by 7-9% at 50% sparsity on the 8192- and 16384-token shapes, tied at 75%
    and lost at 90%. On every M = 4096 BERT shape they were 7-48% slower (round 23),
    so timing them there would only lengthen kernel choice."""
    if M <= 64 or G % 64 or not sm90_tile.available():
        return []
    bn = min(128, G)
    return [TileConfig(bn, bm, sm90_tile.BLOCK_K, 12, sm90_tile.BLOCKS[(bn, bm)],
                       group_cb=32, flat=1, impl="sm90")
            for bm in (256, 384, 128)
            if sm90_tile.supports(G, bn, bm) and (bm != 384 or M >= 8192)]


def with_store_variants(configs: Sequence[TileConfig], plan: TilePlan,
                        feature_major: bool) -> list[TileConfig]:
    """``configs`` with each sm90 candidate also as a direct-store variant
    (``store="direct"``, pruned-away features then written by :func:`fill_missing`)
    where the plan's default epilogue for this layer is the row-segment one
    (:meth:`TilePlan.sm90_store` ``"span"``).

    Why only there: row segments drop the separate fill but stage every row through
    shared memory, and which costs more depends on the shape (bench/NOTES_tile.md
    round 18: 1.03-1.11x faster at three shapes, 0.89-0.91x at 4096x768->3072). Where
    bulk stores apply they are not paired with direct stores: they won by 1.25-1.6x
    where both were measured (round 4)."""
    if plan.sm90_store(feature_major) != "span":
        return list(configs)
    out = []
    for cfg in configs:
        out.append(cfg)
        if cfg.impl == "sm90" and not cfg.store:
            out.append(replace(cfg, store="direct"))
    return _dedupe(out)


def default_config(M: int, G: int, feature_major: bool) -> TileConfig:
    """The config used without timing (CUDA graph capture with no decision cached)."""
    if M <= 64:
        return TileConfig(min(32, G), max(16, next_power_of_2(M)), 128, 4, 4)
    return TileConfig(min(128, G), 128 if M > 1024 else 64, 64, 4, 4)


def _dedupe(cfgs: Sequence[TileConfig]) -> list[TileConfig]:
    seen, out = set(), []
    for c in cfgs:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


# --------------------------------------------------------------------------- sparse path
def sparse_forward(x: Tensor, values: Tensor, row_idx: Tensor, row_ptr: Tensor,
                   col_map: Tensor, bias: Optional[Tensor], out_features: int,
                   activation: str, feature_major: bool, plan: TilePlan,
                   cfg: TileConfig, out: Optional[Tensor] = None) -> Tensor:
    """Run the tile kernel ``cfg`` names (Triton, or the sm90 CUDA C++ kernel when
    ``cfg.impl == "sm90"``); output features absent from ``col_map`` get
    ``activation(bias)`` (or 0): from the sm90 kernel itself where its epilogue writes
    whole row segments (:meth:`TilePlan.sm90_store` ``"span"``), else from one small
    launch after the kernel (:func:`fill_missing`).

    ``out`` (contiguous, right shape) lets tests pass a NaN-poisoned buffer to prove
    that every element is written."""
    values = values.contiguous()
    row_idx, row_ptr, col_map = row_idx.contiguous(), row_ptr.contiguous(), \
        col_map.contiguous()
    if out is None:
        out = torch.empty(_out_shape(x, out_features, feature_major), dtype=x.dtype,
                          device=x.device)
    if feature_major:
        x2 = x if x.stride(1) == 1 else x.contiguous()
        x_fm, out2 = True, out
    else:
        x2 = x.reshape(-1, x.shape[-1])
        out2 = out.view(x2.shape[0], out_features)
        x_fm = cfg.transpose_x or cfg.impl == "sm90"
        # the gather wants each kept input feature as one contiguous M-vector
        x2 = transpose_2d(x2) if x_fm else x2.contiguous()
    M = x2.shape[1] if x_fm else x2.shape[0]
    if cfg.impl == "sm90":
        if M:
            store, out_pos = plan.sm90_store_args(feature_major, x.device, cfg.store)
            sm90_tile.launch(x2, values, row_idx, col_map, bias, out2, feature_major,
                             activation, cfg.block_n, cfg.block_m,
                             _schedule(plan, cfg, M, x.device), store, out_pos)
            if plan.kernel_writes_missing(store):
                return out
    else:
        spec = _triton_launch(x2, x_fm, values, row_idx, col_map, bias, out2,
                              feature_major, activation, plan, cfg, M)
        if spec is not None:
            spec.run()
    fill_missing(out2, feature_major, plan.missing, bias, activation)
    return out


def _schedule(plan: TilePlan, cfg: TileConfig, M: int, device) -> Optional[tuple]:
    """(items, progs) of the persistent kernels (``cfg.flat``), else None."""
    if not cfg.flat or not M:
        return None
    return plan.schedule_for(cfg.block_n, cfg.block_m, cfg.block_k, M,
                             cfg.flat * num_sms(device), cfg.group_cb, device)


def _triton_launch(x2, x_fm, values, row_idx, col_map, bias, out2, feature_major,
                   activation, plan, cfg, M):
    """The Triton tile kernel's launch for these 2-D views (None: nothing to do)."""
    split = None
    if cfg.split and M:
        cut = plan.split_blocks_for(cfg.block_n, cfg.block_k, cfg.split, x2.device)
        if cut.groups:                 # else nothing is cut: the plain grid kernel
            split = (cut.table, *plan.split_workspace(cut, cfg.block_n, cfg.block_m, M,
                                                      x2.device), cut.max_parts)
    return tile_kernel_launch(x2, x_fm, values, row_idx, col_map, bias, out2,
                              feature_major, plan.blocks_for(cfg.block_n, x2.device),
                              plan.cols_contig, activation, cfg,
                              _schedule(plan, cfg, M, x2.device), split)


# --------------------------------------------------------------------------- eager replay
class _EagerRunner:
    """Replays the Triton launch of one layer's chosen sparse config with the tensors of
    each call.

    Why: an eager call of a µs-size layer is host-bound, and the general path
    (:func:`sparse_forward`) re-derives the same launch every call — layout views,
    plan tables, the split workspace, constexprs, the relaunch cache key. The runner
    keeps all of that from the call that built it and does per call only what can
    differ: allocate the output, (row-major) transpose x, check each tensor's dtype and
    alignment (:class:`~sparsefx.runtime.cuda.triton_launch.Relaunch`), launch, and
    write the pruned-away output features as the general path does. It is built for
    Triton kernels only (a layer on the sm90 kernel gets a C++ record instead,
    :func:`_offer_sm90_to_cpp`) and returns None whenever a check fails, so the caller
    falls back to the general path."""

    __slots__ = ("plan", "relaunch", "fixed", "feature_major", "activation", "M", "K", "N")

    def __init__(self, plan, relaunch, fixed, feature_major, activation, M, K, N):
        self.plan, self.relaunch, self.fixed = plan, relaunch, fixed
        self.feature_major, self.activation = feature_major, activation
        self.M, self.K, self.N = M, K, N

    def __call__(self, x, values, row_idx, col_map, bias, plan) -> Optional[Tensor]:
        # the plan is held, so its id (part of the fast key) cannot be reused meanwhile
        if plan is not self.plan or not (values.is_contiguous() and
                                         row_idx.is_contiguous() and
                                         col_map.is_contiguous()):
            return None
        out = torch.empty(_out_shape(x, self.N, self.feature_major), dtype=x.dtype,
                          device=x.device)
        if self.feature_major:
            x2, out2 = x, out
        else:
            x2, out2 = transpose_2d(x.reshape(self.M, self.K)), out.view(self.M, self.N)
        head = (x2, values, row_idx, col_map, values if bias is None else bias, out2)
        if not self.relaunch(head + self.fixed):
            return None
        fill_missing(out2, self.feature_major, self.plan.missing, bias, self.activation)
        return out


def _eager_runner(dec: Decision, args: tuple, plan: TilePlan) -> Optional[_EagerRunner]:
    """An :class:`_EagerRunner` for calls like ``args`` (made right after the general
    path ran them once, so the kernel is compiled), or None where it does not apply."""
    x, values, row_idx, row_ptr, col_map, bias, out_features, activation, fm = args
    cfg = dec.config
    if dec.choice != "sparse" or cfg is None or cfg.impl != "triton" or \
            not (fm or cfg.transpose_x):
        return None
    if fm:
        if x.stride(1) != 1:
            return None
        x2 = x
        M, K = x.shape[1], x.shape[0]
    else:
        K = x.shape[-1]
        M = x.numel() // K if K else 0
        x2 = torch.empty(K, M, dtype=x.dtype, device=x.device)   # as transpose_2d makes
    out2 = torch.empty((out_features, M) if fm else (M, out_features), dtype=x.dtype,
                       device=x.device)
    spec = _triton_launch(x2, True, values, row_idx, col_map, bias, out2, fm, activation,
                          plan, cfg, M)
    if spec is None:
        return None
    head = (x2, values, row_idx, col_map, values if bias is None else bias, out2)
    if any(a is not b for a, b in zip(spec.tensors, head)):
        return None          # the kernel's argument order changed: never guess
    relaunch = spec.prepare()
    if relaunch is None:
        return None
    return _EagerRunner(plan, relaunch, spec.tensors[len(head):], fm, activation, M, K,
                        out_features)


# --------------------------------------------------------------------------- dense path
_dense_weights: dict[tuple, tuple] = {}


def dense_weight(values: Tensor, row_idx: Tensor, row_ptr: Tensor, col_map: Tensor,
                 out_features: int, in_features: int, dtype: torch.dtype) -> Tensor:
    """The unpacked ``[N, K]`` weight, cached per packed-weight tensor and version
    (the cache entry dies with ``values``)."""
    key = (values.data_ptr(), values._version, tuple(values.shape), row_idx.data_ptr(),
           col_map.data_ptr(), out_features, in_features, dtype)
    hit = _dense_weights.get(key)
    if hit is not None and hit[0]() is values:
        return hit[1]
    w = unpack_tensors(values.detach(), row_idx, row_ptr, col_map, out_features,
                       in_features).to(dtype).contiguous()
    _dense_weights[key] = (weakref.ref(values), w)
    weakref.finalize(values, _dense_weights.pop, key, None)
    return w


#: ways to run a layer dense. "direct": ``F.linear`` (row-major) or ``addmm(b, W, x)``
#: (feature-major); "via_row_major" (feature-major only): ``F.linear`` on the transposed
#: view ``x.t()`` and a Triton transpose of the result; "mm_epilogue" (feature-major
#: only): cuBLAS's bare ``W @ x`` and a Triton pass adding the bias (and activation) in
#: place. The feature-major ``addmm`` runs at 0.60–0.85× of row-major ``F.linear``
#: because its bias cannot be fused (the bare product is at parity), the detour at
#: 0.68–0.88× (bench/bench_dense_fm.py, NOTES_tile rounds 5, 8 and 9). Feature-major
#: layers also time the dense Triton kernel of :mod:`triton_dense` (bias and activation
#: fused), one variant per :func:`triton_dense.dense_configs` entry, named
#: ``triton_fm_<config>``, and on Hopper with the CUTLASS headers installed the CUTLASS
#: kernel of :mod:`sm90_dense` (bias and activation fused too), one variant per library
#: configuration, named ``sm90_fm_<config>``.
DENSE_VARIANTS = ("direct", "via_row_major", "mm_epilogue")
#: feature-major layers with fewer tokens do not time the CUTLASS kernel: its tiles are
#: 128 or more tokens wide, and at M = 16 it ran at 0.22–0.41× of ``F.linear``
#: (bench/NOTES_tile.md round 15)
SM90_DENSE_MIN_M = 256


def dense_variants(feature_major: bool, M: int, K: Optional[int] = None) -> tuple[str, ...]:
    """The dense variants kernel choice times for a layer of this layout, M and (when
    given) K."""
    if not feature_major:
        return DENSE_VARIANTS[:1]
    variants = DENSE_VARIANTS + tuple(c.name for c in dense_configs(M))
    if M >= SM90_DENSE_MIN_M and sm90_dense.supports(M, 8 if K is None else K) \
            and sm90_dense.available():
        variants += tuple(sm90_dense.VARIANT_PREFIX + name
                          for name in sm90_dense.config_names())
    return variants


def dense_forward(x: Tensor, values: Tensor, row_idx: Tensor, row_ptr: Tensor,
                  col_map: Tensor, bias: Optional[Tensor], out_features: int,
                  activation: str, feature_major: bool, variant: str = "direct") -> Tensor:
    """The dense fallback and the timing baseline, on the unpacked weight.
    ``variant`` is one of :func:`dense_variants` (only "direct" for row-major x)."""
    K = x.shape[0] if feature_major else x.shape[-1]
    w = dense_weight(values, row_idx, row_ptr, col_map, out_features, K, x.dtype)
    b = None if bias is None else bias.to(x.dtype)
    if not feature_major:
        return apply_activation(F.linear(x, w, b), activation).contiguous()
    if variant == "via_row_major":
        return transpose_2d(apply_activation(F.linear(x.t(), w, b), activation))
    if variant == "mm_epilogue":
        return mm_then_epilogue(x, w, b, activation)
    if variant.startswith(sm90_dense.VARIANT_PREFIX):
        return sm90_dense.dense_fm_linear_sm90(x, w, b, activation,
                                               variant[len(sm90_dense.VARIANT_PREFIX):])
    if variant != "direct":
        return dense_fm_linear(x, w, b, activation, DenseConfig.from_name(variant))
    y = w @ x if b is None else torch.addmm(b[:, None], w, x)
    return apply_activation(y, activation).contiguous()


# --------------------------------------------------------------------------- decide
def kernel_supported(x: Tensor, values: Tensor) -> bool:
    """The Triton kernel runs fp16/bf16 on CUDA with matching weight dtype."""
    return (x.is_cuda and x.dtype in _SUPPORTED and values.dtype == x.dtype
            and values.dim() == 2 and values.shape[1] >= 16
            and (values.shape[1] & (values.shape[1] - 1)) == 0)


def _time_ms(fn, reps: int = 20, trials: int = 7) -> float:
    """Median GPU time of ``fn`` in ms, replayed from a CUDA graph.

    Why a graph: timed eagerly, a µs-sized layer's time is mostly the per-call Python
    and launch overhead (25–90 µs for the sparse path, less for cuBLAS), which would
    send every BERT-sized layer to dense; deployments that care about speed run under
    CUDA graphs (``torch.compile(mode="reduce-overhead")``, ``torch.cuda.graphs``),
    where that overhead is gone. Falls back to eager ``do_bench`` if capture fails.
    """
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()                      # warm up: allocations and Triton compilation
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(reps):
                fn()
        times = []
        for _ in range(trials):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / reps)
        return float(sorted(times)[len(times) // 2])
    except Exception:                 # noqa: BLE001 - e.g. an op that cannot be captured
        torch.cuda.synchronize()
        from triton.testing import do_bench
        return float(do_bench(fn, warmup=5, rep=25, return_mode="median"))


def decide(x_or_shape: Union[Tensor, Sequence[int]], values: Tensor, row_idx: Tensor,
           row_ptr: Tensor, col_map: Tensor, bias: Optional[Tensor], out_features: int,
           activation: str = "none", feature_major: bool = False, *,
           force: bool = False, layer: Optional[str] = None) -> Decision:
    """Choose sparse config or dense for one layer at its real shape (cached).

    ``x_or_shape`` is an example input or its shape (random data of ``values.dtype``
    is drawn then: never zeros, they time faster than real data). Returns the cached
    decision unless ``force``. ``layer`` only labels the decision for the pass log.
    """
    x = x_or_shape if isinstance(x_or_shape, Tensor) else torch.randn(
        tuple(x_or_shape), dtype=values.dtype, device=values.device)
    _check_tile_args(x, values, out_features, activation, feature_major)
    plan = get_plan(row_ptr, col_map, out_features, values.shape[1])
    key, shape = _key_and_shape(x, values, plan, bias, out_features, activation,
                                feature_major)
    with _lock:
        _load_disk()
        if not force and key in _memory:
            dec = _memory[key]
            _note_used(dec, layer)
            return dec
    dec = _measure(x, values, row_idx, row_ptr, col_map, bias, out_features, activation,
                   feature_major, plan, key, shape)
    with _lock:
        _memory[key] = dec
        _forget_fast_paths()     # a forced re-decision must not be shadowed
        _note_used(dec, layer)
        _save_disk()
    return dec


def _note_used(dec: Decision, layer: Optional[str]) -> None:
    if layer is not None:
        dec.shape = {**dec.shape, "layer": layer}
    _used.setdefault(dec.key, dec)


def _key_and_shape(x, values, plan, bias, out_features, activation, feature_major):
    K = x.shape[0] if feature_major else x.shape[-1]
    M = x.shape[1] if feature_major else x.numel() // max(K, 1)
    # a row-major input read through a transposed view ([M, K], strides (1, M)) runs a
    # different path (no transpose copy before the gather): its own decision
    transposed = not feature_major and x.dim() == 2 and x.stride(-1) != 1 and K > 1
    key = decision_key(M, K, out_features, plan, x.dtype, feature_major, activation,
                       bias is not None, x.device) + ("|xT" if transposed else "")
    shape = {"M": M, "K": K, "N": out_features, "G": plan.G, "tiles": plan.num_tiles,
             "mean_k": plan.mean_k, "max_k": plan.max_k,
             "dtype": str(x.dtype).replace("torch.", ""),
             "layout": "feature_major" if feature_major else
             ("row_major_from_fm_view" if transposed else "row_major")}
    return key, shape


def _measure(x, values, row_idx, row_ptr, col_map, bias, out_features, activation,
             feature_major, plan, key, shape) -> Decision:
    """Time dense (each of :func:`dense_variants`) and every candidate config; keep
    the fastest.

    Protocol: a warm-up timing of the direct dense product (discarded); a screening
    pass that times every dense variant and every candidate once; then
    :data:`FINAL_ROUNDS` rounds over the finalists only — the :data:`FINALISTS`
    fastest sparse configs and the :data:`DENSE_FINALISTS` fastest dense variants —
    in alternating order (forward, then reversed), and each finalist's time is the
    median of its rounds. The choice compares those medians.

    Why rounds and a median: the GPU's clock drifts while candidates are timed one
    after another (a cold GPU speeds up, one heated by the dense GEMM throttles), so
    a single timing, or the best of two, favours whatever ran at a good moment. In
    run 5 choice kept a Triton config on 16384×4096→4096 at 75% that the sm90 kernel
    (timed last) beats by 10–13% side by side (bench/NOTES_tile.md round 5); in run 11
    a best-of-two kept a dense variant timed once at boost clock (round 11).
    Interleaving gives sparse and dense the same sequence of GPU states, and the
    median ignores one lucky or unlucky round."""
    args = (x, values, row_idx, row_ptr, col_map, bias, out_features, activation,
            feature_major)

    def time_dense(variant: str) -> Optional[float]:
        try:
            return _time_ms(lambda: dense_forward(*args, variant))
        except Exception:      # a Triton variant that does not fit (never "direct")
            if variant == "direct":
                raise
            return None

    def time_sparse(cfg: TileConfig) -> Optional[float]:
        try:
            return _time_ms(lambda: sparse_forward(*args, plan, cfg))
        except Exception:      # e.g. triton OutOfResources for this shape: skip it
            return None

    # warm-up, result discarded: on a GPU that was idle, whatever is timed first runs at
    # boost clock. In RESULTS run 11 the first layer of a call timed the `direct` dense
    # variant at 849 µs, kept it, and it then ran at 1003 µs where the Triton variant
    # runs at about 880 (bench/NOTES_tile.md round 11)
    _time_ms(lambda: dense_forward(*args, "direct"))
    dense_times = _screen(dense_variants(feature_major, shape["M"], shape.get("K")), time_dense)
    workspaces = plan.workspace_keys()
    configs = [cfg for cfg in with_store_variants(
                   candidate_configs(shape["M"], plan.G, feature_major), plan, feature_major)
               if not cfg.split or _split_worth_timing(plan, cfg, shape["M"], x.device)]
    times = _screen(configs, time_sparse)
    final_dense = _fastest(dense_times, DENSE_FINALISTS)
    final_sparse = _fastest(times, FINALISTS)
    entrants = [("dense", v) for v in final_dense] + [("sparse", c) for c in final_sparse]
    rounds = _final_rounds(entrants, lambda kind, what: time_dense(what) if kind == "dense"
                           else time_sparse(what))
    for (kind, what), ms in rounds.items():
        (dense_times if kind == "dense" else times)[what] = ms
    plan.release_workspaces(keep=workspaces)   # the winner's comes back on first use
    variant = min(final_dense, key=dense_times.get)
    dense_ms = dense_times[variant]
    if not times:
        return Decision(key, "dense", None, dense_ms, None, shape, [],
                        dense_variant=variant)
    best_cfg = min(final_sparse, key=times.get)
    best_ms = times[best_cfg]
    choice = "sparse" if best_ms < dense_ms else "dense"
    return Decision(key, choice, best_ms, dense_ms, best_cfg, shape,
                    [(c.to_dict(), ms) for c, ms in times.items()], dense_variant=variant)


def _screen(entries, time_one) -> dict:
    """One timing per entry, in order; entries that fail to run are left out."""
    out = {}
    for entry in entries:
        ms = time_one(entry)
        if ms is not None:
            out[entry] = ms
    return out


def _fastest(times: dict, n: int) -> list:
    """The ``n`` entries of ``times`` with the lowest time, fastest first."""
    return sorted(times, key=times.get)[:n]


def _final_rounds(entrants: list, time_one) -> dict:
    """Median time of each ``(kind, what)`` entrant over :data:`FINAL_ROUNDS` rounds,
    each round in the opposite order of the one before. An entrant that fails in a
    round gets the median of the rounds it ran; one that fails in every round is left
    out (the caller keeps its screening time)."""
    runs: dict = {e: [] for e in entrants}
    for r in range(FINAL_ROUNDS):
        for entrant in (entrants if r % 2 == 0 else entrants[::-1]):
            ms = time_one(*entrant)
            if ms is not None:
                runs[entrant].append(ms)
    return {e: statistics.median(ms) for e, ms in runs.items() if ms}


#: sparse configs and dense variants timed again in :func:`_measure`'s final rounds
FINALISTS = 3
DENSE_FINALISTS = 2
#: rounds over the finalists (alternating order; each keeps its median)
FINAL_ROUNDS = 3
#: split-K candidates whose workspace (partial sums) would be larger are not timed
MAX_SPLIT_WORKSPACE = 64 << 20


def _split_worth_timing(plan: TilePlan, cfg: TileConfig, M: int, device) -> bool:
    """A split-K candidate is timed only when it cuts some block (otherwise it is the
    plain grid kernel again) and its workspace stays within
    :data:`MAX_SPLIT_WORKSPACE`."""
    cut = plan.split_blocks_for(cfg.block_n, cfg.block_k, cfg.split, device)
    return cut.groups > 0 and \
        cut.workspace_bytes(cfg.block_n, cfg.block_m, M) <= MAX_SPLIT_WORKSPACE


# --------------------------------------------------------------------------- op entry
def tile_linear_cuda(x: Tensor, values: Tensor, row_idx: Tensor, row_ptr: Tensor,
                     col_map: Tensor, bias: Optional[Tensor], out_features: int,
                     activation: str = "none", feature_major: bool = False) -> Tensor:
    """CUDA implementation registered for ``sparsefx::tile_linear``.

    Looks the layer's decision up (measuring on first sight, except during CUDA graph
    capture, where it takes the default config untimed) and runs sparse or dense. From
    the third call of the same kind on (same plan, input shape, strides, dtypes and
    epilogue) a Triton sparse layer is replayed by an :class:`_EagerRunner`.
    """
    _check_tile_args(x, values, out_features, activation, feature_major)
    args = (x, values, row_idx, row_ptr, col_map, bias, out_features, activation,
            feature_major)
    plan = get_plan(row_ptr, col_map, out_features, values.shape[1])
    # per-call fast path: a tuple lookup, no string building (eager calls are
    # host-bound at BERT sizes, bench/profile_host.py); a hit implies the checks
    # below passed for the same dtypes and shapes
    fast_key = (id(plan), x.shape, x.stride(), x.dtype, values.dtype, x.device,
                feature_major, activation, bias is None)
    dec = _fast.get(fast_key)
    if dec is not None and dec.key in _memory:
        runner = _runners.get(fast_key, False)
        if runner:
            out = runner(x, values, row_idx, col_map, bias, plan)
            if out is not None:
                _offer_to_cpp(fast_key, dec, args, runner, plan)
                return out
        out = _run(dec, args, plan)
        # second call of this kind: the kernel is compiled. Not while a graph is being
        # captured: a split workspace made then lives in the graph's memory pool
        if runner is False and not torch.cuda.is_current_stream_capturing():
            if len(_runners) >= _MAX_RUNNERS:
                _runners.clear()
            runner = _runners[fast_key] = _eager_runner(dec, args, plan)
        if runner is not False:
            _offer_to_cpp(fast_key, dec, args, runner, plan)
        return out
    if not kernel_supported(x, values):
        return dense_forward(*args)
    key, shape = _key_and_shape(x, values, plan, bias, out_features, activation,
                                feature_major)
    dec = _memory.get(key)
    if dec is None:
        with _lock:
            _load_disk()
            dec = _memory.get(key)
    if dec is None:
        if torch.cuda.is_current_stream_capturing():
            dec = Decision(key, "sparse", None, None,
                           default_config(shape["M"], plan.G, feature_major), shape,
                           measured=False)
            _memory[key] = dec
        else:
            dec = decide(x, *args[1:])
    _used.setdefault(key, dec)
    if dec.measured:
        _fast[fast_key] = dec
    return _run(dec, args, plan)


def _offer_to_cpp(fast_key: tuple, dec: Decision, args: tuple,
                  runner: Optional[_EagerRunner], plan: TilePlan) -> None:
    """Register calls like ``args`` with the C++ eager path (runtime/cuda/eager_fastpath),
    once per layer tensors and their versions: a replayable Triton sparse layer by its
    runner, a sparse layer on the sm90 kernel by that library's arguments, a layer run
    dense (the "direct" way, on the CUTLASS kernel or on a dense Triton configuration)
    by its unpacked weight. Later calls like it skip Python entirely. Offered again for
    other tensor objects of the same layer (a module's parameters instead of plain
    tensors, say) or after an in-place change, which the C++ records tell apart."""
    if not eager_fastpath.may_register():
        return
    x, values, row_idx, row_ptr, col_map, bias, out_features, activation, feature_major = args
    key = (fast_key, id(values), id(row_idx), id(row_ptr), id(col_map), id(bias),
           values._version, row_ptr._version, col_map._version)
    if key in _cpp_offers or torch.cuda.is_current_stream_capturing():
        return
    if len(_cpp_offers) >= _MAX_RUNNERS:
        _cpp_offers.clear()
    _cpp_offers[key] = None
    if runner is not None:
        eager_fastpath.register(args, runner)
    elif dec.choice == "dense" or dec.config is None:
        _offer_dense_to_cpp(dec.dense_variant, args)
    elif dec.config.impl == "sm90":
        _offer_sm90_to_cpp(dec.config, args, plan)


def _offer_sm90_to_cpp(cfg: TileConfig, args: tuple, plan: TilePlan) -> None:
    """Register a sparse layer on the sm90 kernel, where :func:`sparse_forward` would
    pass its tensors to the library as they are (no copy, no conversion); the record
    writes pruned-away output features as that function does (in the kernel's
    epilogue, or by a launch after it)."""
    x, values, row_idx, row_ptr, col_map, bias, out_features, activation, fm = args
    K = x.shape[0] if fm else x.shape[-1]
    M = x.shape[1] if fm else (x.numel() // K if K else 0)
    schedule = _schedule(plan, cfg, M, x.device)
    if not M or schedule is None:
        return
    store, out_pos = plan.sm90_store_args(fm, x.device, cfg.store)
    native = sm90_tile.native_entry(
        x.stride(0) if fm else M, K, M, values, row_idx, col_map, bias, fm, out_features,
        activation, cfg.block_n, cfg.block_m, schedule, store, out_pos)
    if native is not None:
        missing = None if plan.kernel_writes_missing(store) else plan.missing
        eager_fastpath.register_sm90(args, M, K, native, schedule, missing,
                                     keep=() if out_pos is None else (out_pos,))


def _offer_dense_to_cpp(variant: str, args: tuple) -> None:
    """Register a layer run dense with the C++ path, where its variant has a record:
    "direct" (ATen), the CUTLASS kernel, a pointer-load dense Triton configuration.
    ``via_row_major`` and ``mm_epilogue`` (two launches each) have none."""
    x, values, row_idx, row_ptr, col_map, bias, out_features, activation, fm = args
    cutlass = variant.startswith(sm90_dense.VARIANT_PREFIX)
    triton_kernel = variant.startswith("triton_fm_")
    if variant != "direct" and not (cutlass or triton_kernel):
        return
    K = x.shape[0] if fm else x.shape[-1]
    weight = dense_weight(values, row_idx, row_ptr, col_map, out_features, K, x.dtype)
    native = launch = None
    if cutlass:
        native = sm90_dense.native_entry(variant[len(sm90_dense.VARIANT_PREFIX):], x,
                                         weight, activation)
        if native is None:
            return
    elif triton_kernel:
        out = torch.empty(out_features, x.shape[1], dtype=x.dtype, device=x.device)
        launch = eager_launch(x, weight, bias, out, activation,
                              DenseConfig.from_name(variant))
        if launch is None:
            return
    eager_fastpath.register_dense(args, weight, native, launch)


def _run(dec: Decision, args: tuple, plan: TilePlan) -> Tensor:
    if dec.choice == "dense" or dec.config is None:
        return dense_forward(*args, dec.dense_variant)
    return sparse_forward(*args, plan, dec.config)
