"""Dense feature-major linear in Triton: ``out [N, M] = act(W [N, K] @ x [K, M] + b)``.

Why: a feature-major tile layer that kernel choice sends to dense (low sparsity) needs
a dense GEMM that reads ``x [K, M]`` and writes ``out [N, M]``. cuBLAS runs the bare
product as fast as the row-major ``F.linear`` (0.93–1.02×), but in ``[N, M]`` the bias
runs along the first dimension, which neither PyTorch nor cuBLASLt can fuse (cuBLASLt
rejects its bias epilogue with a row-major output), so ``addmm`` copies the broadcast
bias into the output and the GEMM reads it back: 0.60–0.85× in all (bench/NOTES_tile.md
round 8). This kernel computes the product with the bias and activation in its
epilogue; kernel choice times it next to the cuBLAS variants and keeps the fastest
(:func:`sparsefx.runtime.cuda.dispatch.dense_variants`).

One program computes one ``[BLOCK_N, BLOCK_M]`` block of ``out`` (or, persistent,
several in turn); programs are grouped ``GROUP_N`` row blocks × all token blocks, row
block fastest, so programs that run together read the same ``x`` columns while their
weight rows stay in L2. Operands are loaded through pointers or, where their addresses
and row strides allow, by TMA (``DenseConfig.loads``). Block heights are powers of two
or three times one (three dots share each x tile), because at N = 768 192-row blocks
fill the GPU where 128 and 256 do not (bench/NOTES_tile.md round 8).

This module imports triton at the top: import it only through
:mod:`sparsefx.runtime.cuda`, which guards the import.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from triton.tools.tensor_descriptor import TensorDescriptor

from sparsefx.runtime.cuda.triton_launch import KernelLaunch, launch, next_power_of_2
from sparsefx.runtime.cuda.triton_tile import ACT_CODES, _after_previous_kernel, \
    _load_bias, _store_epilogue, _work_item, num_sms, pdl_enabled
from sparsefx.runtime.ops import apply_activation


@dataclass(frozen=True)
class DenseConfig:
    """Launch configuration of :func:`dense_fm_linear`."""

    block_n: int                 # a power of two, or 3 × one (pointer loads only)
    block_m: int
    block_k: int
    num_warps: int
    num_stages: int
    group_n: int = 8
    loads: str = "ptr"           # "ptr": pointer loads; "tma": TMA (tensor descriptors)
    persistent: bool = False     # tma only: one program per SM walks the output blocks

    def __post_init__(self):
        part = self.block_n // 3 if self.block_n % 3 == 0 else self.block_n
        if part < 1 or part & (part - 1):
            raise ValueError(f"block_n must be a power of two or 3 × one, got {self.block_n}")
        if part != self.block_n and self.loads != "ptr":
            raise ValueError(f"block_n = {self.block_n} (3 × {part}) needs pointer loads")

    @property
    def name(self) -> str:
        """The dense-variant name kernel choice records, e.g.
        ``triton_fm_128x128x64_w8s3g8`` or ``triton_fm_128x256x64_w8s3g8_tma_pers``."""
        return (f"triton_fm_{self.block_n}x{self.block_m}x{self.block_k}_"
                f"w{self.num_warps}s{self.num_stages}g{self.group_n}"
                + ("" if self.loads == "ptr" else f"_{self.loads}")
                + ("_pers" if self.persistent else ""))

    @staticmethod
    @functools.lru_cache(maxsize=None)       # parsed on every eager dense call
    def from_name(name: str) -> "DenseConfig":
        """Inverse of :attr:`name`; raises ValueError for anything else."""
        match = _NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"not a dense Triton variant name: {name!r}")
        *ints, tma, pers = match.groups()
        return DenseConfig(*(int(v) for v in ints), loads="tma" if tma else "ptr",
                           persistent=bool(pers))


_NAME = re.compile(r"triton_fm_(\d+)x(\d+)x(\d+)_w(\d+)s(\d+)g(\d+)(_tma)?((?<=_tma)_pers)?")


def dense_configs(M: int) -> list[DenseConfig]:
    """Configurations kernel choice times for ``M`` tokens (a few per regime: small M
    streams the weight, so narrow row blocks make enough programs; large M is compute
    bound, so wide blocks and deep pipelines)."""
    if M <= 64:
        bm = max(16, next_power_of_2(M))
        return [DenseConfig(32, bm, 128, 4, 4), DenseConfig(64, bm, 128, 4, 4)]
    if M <= 1024:
        return [DenseConfig(64, 64, 64, 4, 4), DenseConfig(128, 64, 64, 4, 4),
                DenseConfig(128, 128, 64, 8, 3)]
    # the round-8 sweeps' winners (bench/NOTES_tile.md): 128x256 blocks (TMA loads on
    # three of five bench shapes) and, where N = 768, 192-row blocks
    return [DenseConfig(128, 256, 64, 8, 4), DenseConfig(128, 256, 64, 8, 3, loads="tma"),
            DenseConfig(128, 256, 64, 8, 3, loads="tma", persistent=True),
            DenseConfig(192, 128, 32, 8, 4)]


@triton.jit
def _dense_fm_kernel(w_ptr, x_ptr, bias_ptr, out_ptr, N, K, M,
                     stride_wn, stride_xk, stride_on,
                     BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                     GROUP_N: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                     EVEN_K: tl.constexpr, WIDE_INDEX: tl.constexpr, USE_PDL: tl.constexpr):
    """One ``[BLOCK_N, BLOCK_M]`` block of ``out``; ``w``, ``x`` and ``out`` have unit
    stride along their last dimension (K, M and M). ``USE_PDL``: see
    :func:`triton_tile._after_previous_kernel`."""
    _after_previous_kernel(USE_PDL)
    num_mb = tl.cdiv(M, BLOCK_M)
    nb, mb = _work_item(tl.program_id(0), num_mb, tl.cdiv(N, BLOCK_N), GROUP_N)
    offs_n = nb * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    n_mask = offs_n < N
    m_mask = offs_m < M
    b = _load_bias(bias_ptr, offs_n, n_mask, HAS_BIAS)
    if WIDE_INDEX:
        w_rows = offs_n.to(tl.int64) * stride_wn
        x_rows = offs_k.to(tl.int64) * stride_xk
    else:
        w_rows = offs_n * stride_wn
        x_rows = offs_k * stride_xk
    # masked, not clamped, at the N and M edges: a clamped index hides from the
    # compiler that x's columns are contiguous, and the loads then neither vectorise
    # nor pipeline
    w_tile = w_ptr + w_rows[:, None] + offs_k[None, :]
    x_tile = x_ptr + x_rows[:, None] + offs_m[None, :]
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        if EVEN_K:
            wb = tl.load(w_tile, mask=n_mask[:, None], other=0.0)
            xb = tl.load(x_tile, mask=m_mask[None, :], other=0.0)
        else:
            k_mask = (k + offs_k) < K
            wb = tl.load(w_tile, mask=n_mask[:, None] & k_mask[None, :], other=0.0)
            xb = tl.load(x_tile, mask=k_mask[:, None] & m_mask[None, :], other=0.0)
        acc = tl.dot(wb, xb, acc)
        w_tile += BLOCK_K
        x_tile += BLOCK_K * stride_xk
    _store_epilogue(acc, b, offs_n, n_mask, offs_m, m_mask, out_ptr, stride_on, 1,
                    HAS_BIAS, ACT, WIDE_INDEX)


@triton.jit
def _dense_fm_3part_kernel(w_ptr, x_ptr, bias_ptr, out_ptr, N, K, M,
                           stride_wn, stride_xk, stride_on,
                           PART_N: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_K: tl.constexpr, GROUP_N: tl.constexpr,
                           HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                           EVEN_K: tl.constexpr, WIDE_INDEX: tl.constexpr,
                           USE_PDL: tl.constexpr):
    """:func:`_dense_fm_kernel` for blocks of ``3 * PART_N`` output rows, computed as
    three dots that share each loaded x tile. Why: Triton block shapes are powers of
    two, and for N = 768 those give 3 or 6 row blocks — at M = 4096, 96 blocks of
    128×256 for 132 SMs (a quarter idle) or 192 of 128×128 (1.5 per SM). Blocks of 192
    rows make 4 × 32 = 128."""
    _after_previous_kernel(USE_PDL)
    num_mb = tl.cdiv(M, BLOCK_M)
    nb, mb = _work_item(tl.program_id(0), num_mb, tl.cdiv(N, 3 * PART_N), GROUP_N)
    rows_a = nb * 3 * PART_N + tl.arange(0, PART_N)
    rows_b = rows_a + PART_N
    rows_c = rows_b + PART_N
    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    m_mask = offs_m < M
    if WIDE_INDEX:
        x_rows = offs_k.to(tl.int64) * stride_xk
        w_a = w_ptr + rows_a.to(tl.int64)[:, None] * stride_wn + offs_k[None, :]
    else:
        x_rows = offs_k * stride_xk
        w_a = w_ptr + rows_a[:, None] * stride_wn + offs_k[None, :]
    w_b = w_a + PART_N * stride_wn
    w_c = w_b + PART_N * stride_wn
    x_tile = x_ptr + x_rows[:, None] + offs_m[None, :]
    acc_a = tl.zeros((PART_N, BLOCK_M), dtype=tl.float32)
    acc_b = tl.zeros((PART_N, BLOCK_M), dtype=tl.float32)
    acc_c = tl.zeros((PART_N, BLOCK_M), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        if EVEN_K:
            k_mask = offs_k < BLOCK_K                     # all true: no K tail
        else:
            k_mask = (k + offs_k) < K
        xb = tl.load(x_tile, mask=k_mask[:, None] & m_mask[None, :], other=0.0)
        acc_a = tl.dot(tl.load(w_a, mask=(rows_a < N)[:, None] & k_mask[None, :],
                               other=0.0), xb, acc_a)
        acc_b = tl.dot(tl.load(w_b, mask=(rows_b < N)[:, None] & k_mask[None, :],
                               other=0.0), xb, acc_b)
        acc_c = tl.dot(tl.load(w_c, mask=(rows_c < N)[:, None] & k_mask[None, :],
                               other=0.0), xb, acc_c)
        w_a += BLOCK_K
        w_b += BLOCK_K
        w_c += BLOCK_K
        x_tile += BLOCK_K * stride_xk
    _store_rows(acc_a, rows_a, N, offs_m, m_mask, bias_ptr, out_ptr, stride_on,
                HAS_BIAS, ACT, WIDE_INDEX)
    _store_rows(acc_b, rows_b, N, offs_m, m_mask, bias_ptr, out_ptr, stride_on,
                HAS_BIAS, ACT, WIDE_INDEX)
    _store_rows(acc_c, rows_c, N, offs_m, m_mask, bias_ptr, out_ptr, stride_on,
                HAS_BIAS, ACT, WIDE_INDEX)


@triton.jit
def _store_rows(acc, rows, N, offs_m, m_mask, bias_ptr, out_ptr, stride_on,
                HAS_BIAS: tl.constexpr, ACT: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """Bias, activation and store of output rows ``rows`` (those below N)."""
    n_mask = rows < N
    b = _load_bias(bias_ptr, rows, n_mask, HAS_BIAS)
    _store_epilogue(acc, b, rows, n_mask, offs_m, m_mask, out_ptr, stride_on, 1,
                    HAS_BIAS, ACT, WIDE_INDEX)


@triton.jit
def _dense_fm_tma_kernel(w_desc, x_desc, bias_ptr, out_ptr, N, K, M, stride_on,
                         BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_K: tl.constexpr, GROUP_N: tl.constexpr,
                         HAS_BIAS: tl.constexpr, ACT: tl.constexpr, STAGES: tl.constexpr,
                         PERSISTENT: tl.constexpr, WIDE_INDEX: tl.constexpr,
                         USE_PDL: tl.constexpr):
    """:func:`_dense_fm_kernel` with both operands loaded by TMA (the descriptors'
    boxes are [BLOCK_N, BLOCK_K] of ``w`` and [BLOCK_K, BLOCK_M] of ``x``; TMA fills
    what lies past the tensors' edges with zeros, so no load needs a mask). With
    ``PERSISTENT`` each program walks the output blocks ``pid, pid + #programs, ...``."""
    _after_previous_kernel(USE_PDL)
    num_mb = tl.cdiv(M, BLOCK_M)
    num_nb = tl.cdiv(N, BLOCK_N)
    num_blocks = num_mb * num_nb
    step = tl.num_programs(0) if PERSISTENT else num_blocks
    for block in range(tl.program_id(0), num_blocks, step):
        nb, mb = _work_item(block, num_mb, num_nb, GROUP_N)
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for k in tl.range(0, K, BLOCK_K, num_stages=STAGES):
            wb = w_desc.load([nb * BLOCK_N, k])
            xb = x_desc.load([k, mb * BLOCK_M])
            acc = tl.dot(wb, xb, acc)
        offs_n = nb * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
        n_mask = offs_n < N
        m_mask = offs_m < M
        b = _load_bias(bias_ptr, offs_n, n_mask, HAS_BIAS)
        _store_epilogue(acc, b, offs_n, n_mask, offs_m, m_mask, out_ptr, stride_on, 1,
                        HAS_BIAS, ACT, WIDE_INDEX)


@triton.jit
def _bias_act_rows_kernel(y_ptr, bias_ptr, N, M, stride_yn,
                          BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                          HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                          WIDE_INDEX: tl.constexpr, USE_PDL: tl.constexpr):
    """In place, ``y[n, m] = act(y[n, m] + bias[n])`` for one ``[BLOCK_N, BLOCK_M]``
    block of a ``[N, M]`` tensor with contiguous rows (the epilogue of
    :func:`mm_then_epilogue`)."""
    _after_previous_kernel(USE_PDL)
    num_mb = tl.cdiv(M, BLOCK_M)
    nb = tl.program_id(0) // num_mb
    mb = tl.program_id(0) % num_mb
    offs_n = nb * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    n_mask = offs_n < N
    m_mask = offs_m < M
    if WIDE_INDEX:
        off = offs_n.to(tl.int64)[:, None] * stride_yn + offs_m.to(tl.int64)[None, :]
    else:
        off = offs_n[:, None] * stride_yn + offs_m[None, :]
    y = tl.load(y_ptr + off, mask=n_mask[:, None] & m_mask[None, :], other=0.0)
    b = _load_bias(bias_ptr, offs_n, n_mask, HAS_BIAS)
    _store_epilogue(y.to(tl.float32), b, offs_n, n_mask, offs_m, m_mask, y_ptr,
                    stride_yn, 1, HAS_BIAS, ACT, WIDE_INDEX)


def mm_then_epilogue(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                     activation: str) -> Tensor:
    """``activation(weight @ x + bias[:, None])`` as cuBLAS's bare product (as fast
    as the row-major ``F.linear``, bench/NOTES_tile.md round 8) followed by one
    Triton pass that adds the bias and applies the activation in place, while the
    product is still in L2. Returns a contiguous ``[N, M]`` tensor."""
    out = torch.mm(weight, x)
    N, M = out.shape
    if (bias is None and activation == "none") or out.numel() == 0:
        return out
    block_n, block_m = 32, 256
    wide = out.numel() >= 2**31 - 1
    grid = (-(-N // block_n) * -(-M // block_m),)
    pdl = pdl_enabled(out.device)
    launch(_bias_act_rows_kernel, grid, (out, bias if bias is not None else out),
           (N, M, out.stride(0)),
           dict(BLOCK_N=block_n, BLOCK_M=block_m, HAS_BIAS=bias is not None,
                ACT=ACT_CODES[activation], WIDE_INDEX=wide, USE_PDL=pdl),
           num_warps=4, num_stages=1, launch_pdl=pdl)
    return out


def tma_ok(x: Tensor, weight: Tensor) -> bool:
    """Whether TMA can read ``x`` and ``weight`` (rows contiguous, base addresses and
    row strides multiples of 16 bytes)."""
    return all(t.stride(1) == 1 and t.data_ptr() % 16 == 0 and
               (t.stride(0) * t.element_size()) % 16 == 0 for t in (x, weight))


def dense_fm_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], activation: str,
                    cfg: DenseConfig, out: Optional[Tensor] = None) -> Tensor:
    """``activation(weight @ x + bias[:, None])`` for ``x [K, M]``, ``weight [N, K]``
    (same dtype, CUDA; or CPU tensors under the Triton interpreter). Returns a
    contiguous ``[N, M]`` tensor (``out`` when given: contiguous, that shape)."""
    K, M = x.shape
    N = weight.shape[0]
    if weight.shape[1] != K:
        raise ValueError(f"weight is {tuple(weight.shape)}, x is {tuple(x.shape)}")
    x = x if x.stride(1) == 1 else x.contiguous()
    weight = weight if weight.stride(1) == 1 else weight.contiguous()
    if out is None:
        out = torch.empty(N, M, dtype=x.dtype, device=x.device)
    if N == 0 or M == 0:
        return out
    if K == 0:
        # an empty sum: the output is activation(bias) (or activation(0))
        fill = torch.zeros(N, dtype=torch.float32, device=x.device) if bias is None \
            else bias.float()
        out.copy_(apply_activation(fill, activation)[:, None].expand(N, M))
        return out
    wide = _wide_index(x, weight, out)
    if cfg.loads == "tma" and tma_ok(x, weight):
        _launch_tma(x, weight, bias, out, activation, cfg, wide)
        return out
    # pointer loads (also a TMA config's fallback when TMA cannot read the operands)
    pointer_launch(x, weight, bias, out, activation, cfg, wide).run()
    return out


def _wide_index(x: Tensor, weight: Tensor, out: Tensor) -> bool:
    """Whether offsets need 64 bits: they stay below 2**31 unless a tensor is that large."""
    return max(x.numel(), weight.numel(), out.numel()) >= 2**31 - 1


def pointer_launch(x, weight, bias, out, activation, cfg, wide) -> KernelLaunch:
    """The pointer-load kernel's launch, or its three-part form's for block heights
    3 × 2^k, described: :func:`dense_fm_linear` runs it, the eager C++ path prepares its
    relaunch (:func:`eager_launch`)."""
    K, M = x.shape
    N = weight.shape[0]
    pdl = pdl_enabled(x.device)
    if cfg.block_n & (cfg.block_n - 1):
        kernel, height = _dense_fm_3part_kernel, dict(PART_N=cfg.block_n // 3)
    else:
        kernel, height = _dense_fm_kernel, dict(BLOCK_N=cfg.block_n)
    # constexprs in signature order (triton_launch relaunches positionally)
    constexprs = dict(**height, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
                      GROUP_N=cfg.group_n, HAS_BIAS=bias is not None,
                      ACT=ACT_CODES[activation], EVEN_K=K % cfg.block_k == 0,
                      WIDE_INDEX=wide, USE_PDL=pdl)
    grid = (-(-N // cfg.block_n) * -(-M // cfg.block_m),)
    return KernelLaunch(kernel, grid, (weight, x, bias if bias is not None else weight, out),
                        (N, K, M, weight.stride(0), x.stride(0), out.stride(0)),
                        constexprs, dict(num_warps=cfg.num_warps,
                                         num_stages=cfg.num_stages, launch_pdl=pdl))


def eager_launch(x: Tensor, weight: Tensor, bias: Optional[Tensor], out: Tensor,
                 activation: str, cfg: DenseConfig) -> Optional[KernelLaunch]:
    """The one kernel launch :func:`dense_fm_linear` makes for these tensors when it is
    a pointer-load launch on them as given (the C++ eager path replays those), else
    None: a TMA launch (its descriptors are encoded per call), an input it would copy
    first, or an empty product (no launch, or a fill)."""
    K, M = x.shape
    N = weight.shape[0]
    if x.stride(1) != 1 or weight.stride(1) != 1 or not out.is_contiguous() or \
            tuple(out.shape) != (N, M) or weight.shape[1] != K or 0 in (N, M, K):
        return None
    if cfg.loads == "tma" and tma_ok(x, weight):
        return None
    return pointer_launch(x, weight, bias, out, activation, cfg, _wide_index(x, weight, out))


def _launch_tma(x, weight, bias, out, activation, cfg, wide) -> None:
    K, M = x.shape
    N = weight.shape[0]
    w_desc = TensorDescriptor.from_tensor(weight, [cfg.block_n, cfg.block_k])
    x_desc = TensorDescriptor.from_tensor(x, [cfg.block_k, cfg.block_m])
    blocks = -(-N // cfg.block_n) * -(-M // cfg.block_m)
    grid = (min(blocks, num_sms(x.device)) if cfg.persistent else blocks,)
    pdl = pdl_enabled(x.device)
    constexprs = dict(BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
                      GROUP_N=cfg.group_n, HAS_BIAS=bias is not None,
                      ACT=ACT_CODES[activation], STAGES=cfg.num_stages,
                      PERSISTENT=cfg.persistent, WIDE_INDEX=wide, USE_PDL=pdl)
    launch(_dense_fm_tma_kernel, grid,
           (w_desc, x_desc, bias if bias is not None else weight, out),
           (N, K, M, out.stride(0)), constexprs, num_warps=cfg.num_warps,
           num_stages=cfg.num_stages, launch_pdl=pdl)


__all__ = ["DenseConfig", "dense_configs", "dense_fm_linear", "mm_then_epilogue", "tma_ok",
           "eager_launch", "pointer_launch"]
