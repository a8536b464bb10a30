"""The parameter list of the eager C++ path (runtime/cuda/eager_fastpath.py), on CPU.

csrc/eager_fastpath.cpp launches compiled Triton kernels itself, so the parameters it
passes must be laid out exactly as Triton's own launcher lays them out. These tests
build the list for small signatures and, where triton is installed, compare it with
the launcher source Triton generates for the same signature (an independent reference:
if Triton changes its layout, they fail). The launches themselves are checked on a GPU
(tests/gpu/test_eager_fastpath.py).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from sparsefx.runtime.cuda import eager_fastpath
from sparsefx.runtime.cuda.eager_fastpath import launch_params

SLOT, FIXED = 0, 1


def test_constexprs_are_skipped_and_slots_and_scalars_kept_in_order():
    table = torch.arange(4, dtype=torch.int32)
    signature = {"x": "*fp16", "table": "*i32", "n": "i32", "BLOCK": "constexpr",
                 "stride": "i64", "scale": "fp32", "out": "*fp16", "FLAG": "constexpr"}
    args = (None, table, 7, 64, 1 << 40, 0.5, None, True)
    params, keep = launch_params(signature, args, {0: 3, 6: 5})
    assert params == [(SLOT, 3), (FIXED, table.data_ptr()), (4, 7), (5, 1 << 40),
                      (10, 0.5), (SLOT, 5), (FIXED, 0), (FIXED, 0)]
    assert len(keep) == 1 and keep[0] is table


@pytest.mark.parametrize("signature, args", [
    ({"x": "*fp16", "y": "*fp16"}, (None,)),                          # length differs
    ({"d": "tensordesc<fp16[64, 64]>"}, (object(),)),                 # host descriptor
    ({"x": "*fp16"}, (3,)),                                           # pointer, no tensor
    ({"t": ("i32", "i32")}, ((1, 2),)),                               # tuple argument
    ({"n": "i32"}, ("seven",)),                                       # not a number
])
def test_kernels_it_cannot_launch_are_refused(signature, args):
    assert launch_params(signature, args, {}) is None


def test_slots_match_the_kernels_leading_tensors():
    """The tile kernel's first six tensors and the transpose kernel's two tensors map
    onto the slots csrc/eager_fastpath.cpp fills per call."""
    assert eager_fastpath.TILE_KERNEL_SLOTS == {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
    assert eager_fastpath.TRANSPOSE_SLOTS == {0: eager_fastpath.SLOT_X_RAW,
                                             1: eager_fastpath.SLOT_X2}


def test_slot_numbers_equal_the_cpp_enum():
    """Python and csrc/eager_fastpath.cpp number the slots alike (read from the
    source's ``enum Slot``)."""
    source = (Path(__file__).resolve().parents[2] / "csrc" / "eager_fastpath.cpp").read_text()
    enum = source[source.index("enum Slot"):]
    enum = enum[:enum.index("};")]
    cpp = {name: int(v) for name, v in re.findall(r"\b(k\w+) = (\d+)", enum)}
    python = {"kX2": eager_fastpath.SLOT_X2, "kValues": eager_fastpath.SLOT_VALUES,
              "kRowIdx": eager_fastpath.SLOT_ROW_IDX, "kColMap": eager_fastpath.SLOT_COL_MAP,
              "kBiasOrValues": eager_fastpath.SLOT_BIAS_OR_VALUES,
              "kOut": eager_fastpath.SLOT_OUT, "kXRaw": eager_fastpath.SLOT_X_RAW,
              "kWeight": eager_fastpath.SLOT_WEIGHT}
    assert cpp == {**python, "kNumSlots": len(python)}


def test_dense_slots_match_the_dense_kernels_tensors():
    """The dense Triton kernels take (weight, x, bias or weight, out) first; without a
    bias the third is the weight again, never the packed values."""
    pytest.importorskip("triton")
    from sparsefx.runtime.cuda import triton_dense
    for kernel in (triton_dense._dense_fm_kernel, triton_dense._dense_fm_3part_kernel):
        assert kernel.arg_names[:4] == ["w_ptr", "x_ptr", "bias_ptr", "out_ptr"]
    e = eager_fastpath
    assert e.DENSE_KERNEL_SLOTS == {0: e.SLOT_WEIGHT, 1: e.SLOT_X2,
                                    2: e.SLOT_BIAS_OR_VALUES, 3: e.SLOT_OUT}
    assert e.DENSE_KERNEL_SLOTS_NO_BIAS[2] == e.SLOT_WEIGHT


def test_fill_slots_match_the_fill_kernels_tensors():
    """The write of pruned-away features takes (out, missing, bias or missing) first:
    out and the bias are per-call slots, the missing features a fixed pointer."""
    pytest.importorskip("triton")
    from sparsefx.runtime.cuda import missing_features
    assert missing_features._fill_missing_kernel.arg_names[:3] == \
        ["out_ptr", "missing_ptr", "bias_ptr"]
    out2, missing = torch.empty(5, 3), torch.tensor([1, 4])
    bias = torch.randn(5)
    for b in (bias, None):
        launch = missing_features.fill_missing_launch(out2, True, missing, b, "relu")
        assert launch.tensors[0] is out2 and launch.tensors[1] is missing
        assert launch.tensors[2] is (missing if b is None else b)
    e = eager_fastpath
    assert e.FILL_SLOTS == {0: e.SLOT_OUT, 2: e.SLOT_BIAS_OR_VALUES}
    assert e.FILL_SLOTS_NO_BIAS == {0: e.SLOT_OUT}


#: the C type of each parameter kind, as Triton's launcher declares it
_C_TYPE = {SLOT: "CUdeviceptr", FIXED: "CUdeviceptr", 2: "int8_t", 3: "int16_t",
           4: "int32_t", 5: "int64_t", 6: "uint8_t", 7: "uint16_t", 8: "uint32_t",
           9: "uint64_t", 10: "uint32_t", 11: "uint64_t"}   # floats: their bit patterns


@pytest.mark.parametrize("signature", [
    {"x": "*fp16", "n": "i32", "C": "constexpr", "y": "*fp32", "s": "i64", "f": "fp32"},
    {"A": "constexpr", "p": "*bf16", "q": "*i32", "u": "u32", "b": "i1", "d": "fp64",
     "Z": "constexpr"},
    {"only": "constexpr"},
])
def test_layout_equals_the_triton_launchers(signature):
    pytest.importorskip("triton")
    from triton.backends.nvidia.driver import make_launcher
    src = make_launcher({}, signature, None)
    order = re.search(r"void \*params\[\] = \{([^}]*)\}", src).group(1)
    names = [p.strip().lstrip("&") for p in order.split(",") if p.strip()]
    decl = re.search(r"static void _launch\(([^)]*)\)", src).group(1)
    types = dict(reversed(part.strip().rsplit(" ", 1)) for part in decl.split(","))
    args = [None if ty.startswith("*") else (1.5 if ty.startswith("fp") else 3)
            for ty in signature.values()]
    slots = {i: 0 for i, ty in enumerate(signature.values()) if ty.startswith("*")}
    params, _ = launch_params(signature, args, slots)
    expected = [types[n] for n in names]                # Triton's parameters, in order
    assert names[-2:] == ["global_scratch", "profile_scratch"]
    assert [_C_TYPE[kind] for kind, _ in params] == expected


def test_nothing_is_active_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only answer")
    assert not eager_fastpath.active()
    assert eager_fastpath.stats() == (0, 0, 0)
    eager_fastpath.clear()          # harmless when nothing was installed


def test_launch_hooks_keep_layers_off_the_cpp_path(monkeypatch):
    """Triton's launch hooks (empty chains by default) would not run on the C++ path,
    so a registered hook keeps new layers on the Python path."""
    knobs = pytest.importorskip("triton").knobs
    assert not eager_fastpath._launch_hooks_set()

    def hook(*_):
        pass

    knobs.runtime.launch_enter_hook.add(hook)
    try:
        assert eager_fastpath._launch_hooks_set()
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert not eager_fastpath._launch_hooks_set()


def test_hot_path_skips_offers_once_the_module_is_known_missing(monkeypatch):
    monkeypatch.setattr(eager_fastpath, "_module", None)
    monkeypatch.setattr(eager_fastpath, "_tried", False)
    assert eager_fastpath.may_register()          # not tried yet: the offer builds it
    monkeypatch.setattr(eager_fastpath, "_tried", True)
    assert not eager_fastpath.may_register()      # tried, unavailable here
    monkeypatch.setattr(eager_fastpath, "_module", object())
    assert eager_fastpath.may_register()
