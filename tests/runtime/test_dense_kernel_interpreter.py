"""The dense feature-major Triton kernels (runtime/cuda/triton_dense.py: pointer and TMA
loads, grid and persistent) on CPU tensors under ``TRITON_INTERPRET=1``: their code
checked without a GPU.

Also the in-place bias/activation pass of ``mm_then_epilogue``.

Odd N, M and K (K both a multiple of BLOCK_K and not), one token, an empty K, every
activation, with and without bias, into NaN-poisoned outputs against the float64
reference. A subprocess, as the flag is read when triton is first imported; needs
triton (CI has none: skipped there). The same kernel runs on the GPU in
``tests/gpu/test_tile_kernels.py``.
"""
from __future__ import annotations

import importlib.util

import pytest

from sparsefx_testing import run_in_triton_interpreter

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="needs triton")

SCRIPT = r"""
import torch
import torch.nn.functional as F
from sparsefx_testing import kernel_rel_err
from sparsefx.runtime.cuda.triton_dense import DenseConfig, dense_fm_linear, \
    eager_launch, mm_then_epilogue

ACT = {"none": lambda y: y, "relu": torch.relu, "gelu": F.gelu, "silu": F.silu}
gen = torch.Generator().manual_seed(0)
dtype = torch.float16
# block_n = 48 runs the three-part kernel (block heights that are not powers of two);
# TMA configs read by descriptor where K and M are multiples of 8 (16-byte rows) and
# fall back to pointer loads elsewhere; the persistent one runs 4 programs (the
# interpreter's SM count) over more output blocks
configs = (DenseConfig(32, 16, 16, 4, 2), DenseConfig(16, 32, 32, 4, 2, group_n=2),
           DenseConfig(16, 16, 32, 4, 2, loads="tma"),
           DenseConfig(16, 16, 16, 4, 2, group_n=2, loads="tma", persistent=True),
           DenseConfig(48, 16, 16, 4, 2))           # three 16-row parts per block
for N, K, M, act, with_bias in ((50, 64, 77, "gelu", True), (33, 40, 1, "relu", False),
                                (16, 96, 32, "silu", True), (70, 0, 9, "relu", True),
                                (48, 17, 130, "none", False), (70, 40, 72, "gelu", True)):
    w = (torch.randn(N, K, generator=gen) * max(K, 1) ** -0.5).to(dtype)
    x = torch.randn(K, M, generator=gen).to(dtype)
    bias = torch.randn(N, generator=gen).to(dtype) if with_bias else None
    ref = w.double() @ x.double()
    if bias is not None:
        ref = ref + bias.double()[:, None]
    ref = ACT[act](ref)
    for cfg in configs:
        out = torch.full((N, M), float("nan"), dtype=dtype)
        got = dense_fm_linear(x, w, bias, act, cfg, out=out)
        assert got is out
        err = kernel_rel_err(out, ref)
        assert err < 1e-2, (N, K, M, act, cfg, err)
    # a strided x view is read correctly (the kernel is given a contiguous copy)
    wide = torch.randn(K, 2 * M, generator=gen).to(dtype)
    got = dense_fm_linear(wide[:, ::2], w, bias, act, configs[0])
    ref2 = w.double() @ wide[:, ::2].double()
    if bias is not None:
        ref2 = ref2 + bias.double()[:, None]
    assert kernel_rel_err(got, ACT[act](ref2)) < 1e-2
    # the bare product and the in-place bias/activation pass (N, M not multiples of
    # its 32x256 blocks); the product is exact in float64 here, so the pass is what
    # is checked (it must cover every element: a skipped block keeps the raw product)
    got = mm_then_epilogue(x.double(), w.double(), None if bias is None else
                           bias.double(), act)
    assert got.shape == (N, M) and got.is_contiguous()
    assert kernel_rel_err(got, ref) < 1e-6, (N, K, M, act, "mm_then_epilogue")
    # the launch the eager C++ path replays (eager_launch) computes what dense_fm_linear
    # does, bit for bit, for pointer configs; TMA configs on TMA-readable operands, a
    # strided x and an empty product have no such launch
    for cfg in configs:
        out = torch.full((N, M), float("nan"), dtype=dtype)
        launch = eager_launch(x, w, bias, out, act, cfg)
        tma_reads = cfg.loads == "tma" and K % 8 == 0 and M % 8 == 0
        if K == 0 or tma_reads:
            assert launch is None, (N, K, M, cfg)
            continue
        assert launch.tensors[:2] == (w, x) and launch.tensors[3] is out
        assert launch.tensors[2] is (bias if bias is not None else w)
        launch.run()
        assert torch.equal(out, dense_fm_linear(x, w, bias, act, cfg)), (N, K, M, cfg)
    out = torch.empty(N, M, dtype=dtype)
    assert eager_launch(wide[:, ::2], w, bias, out, act, configs[0]) is None
    assert eager_launch(x, w, bias, out.t().contiguous().t(), act, configs[0]) is None \
        or M == 1 or N == 1
print("ok")
"""


def test_dense_kernel_in_interpreter():
    out = run_in_triton_interpreter(SCRIPT)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), \
        out.stdout[-2000:] + out.stderr[-2000:]


def test_config_names_round_trip():
    pytest.importorskip("triton")
    from sparsefx.runtime.cuda.triton_dense import DenseConfig, dense_configs
    for M in (1, 16, 100, 4096):
        for cfg in dense_configs(M):
            assert DenseConfig.from_name(cfg.name) == cfg
            assert cfg.block_m >= min(16, M) and cfg.block_m & (cfg.block_m - 1) == 0
    for bad in ("direct", "via_row_major", "triton_fm_128x128_w8s3g8", "triton_fm_x"):
        with pytest.raises(ValueError, match="not a dense Triton variant"):
            DenseConfig.from_name(bad)
    assert DenseConfig.from_name("triton_fm_192x128x64_w8s4g8").block_n == 192
    with pytest.raises(ValueError, match="power of two"):
        DenseConfig(96 + 64, 128, 64, 8, 4)
    with pytest.raises(ValueError, match="needs pointer loads"):
        DenseConfig(192, 128, 64, 8, 4, loads="tma")


def test_relaunch_key_tells_descriptors_apart():
    """triton_launch keys a host tensor descriptor by what Triton specialises on (dtype,
    block shape), not by its address: a new buffer reuses the compiled kernel, another
    block shape or dtype does not."""
    pytest.importorskip("triton")
    import torch
    from triton.tools.tensor_descriptor import TensorDescriptor
    from sparsefx.runtime.cuda.triton_launch import _tensor_key
    a, b = torch.zeros(64, 64, dtype=torch.float16), torch.ones(128, 64, dtype=torch.float16)
    key = _tensor_key(TensorDescriptor.from_tensor(a, [16, 32]))
    assert _tensor_key(TensorDescriptor.from_tensor(b, [16, 32])) == key
    assert _tensor_key(TensorDescriptor.from_tensor(a, [32, 32])) != key
    assert _tensor_key(TensorDescriptor.from_tensor(a.bfloat16(), [16, 32])) != key
    assert _tensor_key(a) == (torch.float16, a.data_ptr() % 16 == 0)
