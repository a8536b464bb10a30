"""CPU tests of :class:`sparsefx.runtime.cuda.triton_launch.Relaunch`: it launches the
kept kernel with the call's tensors and the fixed tail, and refuses (returns False,
launching nothing) whenever a tensor's dtype or 16-byte alignment, or the current
device, differs from what the kernel was specialised on. A stand-in kernel records the
launches and stand-in launch hooks replace triton's, so this runs without triton or a
GPU; the GPU tests (tests/gpu/test_eager_path.py) run the real one."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sparsefx.runtime.cuda import triton_launch


class RecordingKernel:
    """What Relaunch touches of a CompiledKernel."""

    function = "fn-handle"
    packed_metadata = "packed"

    def __init__(self):
        self.launches = []

    def launch_metadata(self, grid3, stream, *args):
        return None

    def run(self, gx, gy, gz, stream, function, packed, metadata, enter, exit_, *args):
        self.launches.append(((gx, gy, gz), stream, args))


@pytest.fixture(autouse=True)
def no_launch_hooks(monkeypatch):
    hooks = SimpleNamespace(launch_enter_hook=None, launch_exit_hook=None)
    monkeypatch.setattr(triton_launch, "_knobs", SimpleNamespace(runtime=hooks))
    monkeypatch.setattr(triton_launch, "_current_device", lambda: 0)


@pytest.fixture
def relaunch(monkeypatch):
    monkeypatch.setattr(triton_launch, "_raw_stream", lambda device: 1234)
    kernel = RecordingKernel()
    a = torch.zeros(64, dtype=torch.float16)
    b = torch.zeros(64, dtype=torch.int32)
    keys = (triton_launch._tensor_key(a), triton_launch._tensor_key(b))
    return triton_launch.Relaunch(kernel, (5, 1, 1), 0, (7, 8), keys), kernel, a, b


def test_a_matching_call_launches_with_the_fixed_tail(relaunch):
    rl, kernel, a, b = relaunch
    x, y = torch.ones_like(a), torch.ones_like(b)
    assert rl((x, y)) is True
    (grid, stream, args), = kernel.launches
    assert grid == (5, 1, 1) and stream == 1234
    assert args[0] is x and args[1] is y and args[2:] == (7, 8)


def test_a_different_dtype_alignment_count_or_device_launches_nothing(relaunch,
                                                                      monkeypatch):
    rl, kernel, a, b = relaunch
    assert a.data_ptr() % 16 == 0
    misaligned = torch.zeros(65, dtype=torch.float16)[1:]        # 2 bytes off
    assert rl((a.float(), b)) is False
    assert rl((misaligned, b)) is False
    assert rl((a,)) is False
    monkeypatch.setattr(triton_launch, "_current_device", lambda: 1)
    assert rl((a, b)) is False
    assert kernel.launches == []


def test_prepare_needs_a_kept_kernel(monkeypatch):
    """Nothing launched yet (or the ordinary path only): no Relaunch."""
    monkeypatch.setattr(triton_launch, "DIRECT", True)
    spec = triton_launch.KernelLaunch("fn", (1,), (torch.zeros(4),), (3,), {"B": 4},
                                      {"num_warps": 4})
    triton_launch.clear()
    assert spec.prepare() is None
    key = triton_launch._key("fn", spec.tensors, spec.scalars, spec.constexprs,
                             spec.options)
    triton_launch._compiled[key] = None                 # always the ordinary path
    assert spec.prepare() is None
    triton_launch._compiled[key] = (RecordingKernel(), (4,))
    rl = spec.prepare()
    assert rl is not None and rl.tail == (3, 4) and rl.grid3 == (1, 1, 1)
    triton_launch.clear()
