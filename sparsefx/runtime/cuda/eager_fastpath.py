"""The C++ eager path of ``sparsefx::tile_linear`` (``csrc/eager_fastpath.cpp``).

Why: an eager call of a µs-size layer is host-bound. The Python replay
(:class:`~sparsefx.runtime.cuda.dispatch._EagerRunner`) brought a call to 21–23 µs of
host time, against 13–18 µs for ``F.linear`` (bench/RESULTS.md run 13); what remained
was the dispatcher's boxed call into Python, the Python checks, ``torch.empty`` and
Triton's launcher. The C++ module registers the op's CUDA kernel in C++. For a layer
whose launches were registered here (a *record*) a call goes from the dispatcher to
``cuLaunchKernelEx`` without entering Python; every other call goes to the Python
implementation (:func:`~sparsefx.runtime.cuda.dispatch.tile_linear_cuda`), unchanged.

When: from a layer's second eager call of one kind on, the Python implementation
offers it once per set of layer tensors (``dispatch._offer_to_cpp``): :func:`register`
for a Triton sparse layer it replays, :func:`register_dense` for one it runs dense. The
first registration builds the module (tens of seconds, once per machine and torch
version; cached next to the other CUDA libraries, see :mod:`~sparsefx.runtime.cuda.build`)
and hands the op's CUDA key to it. ``SPARSEFX_DISABLE_CUDA_EXT=sparsefx_eager_fastpath``
(or ``1``) keeps the Python path; ``python -m sparsefx.runtime.cuda.prebuild`` builds the
module ahead.

What a record covers (anything else is never registered): a Triton sparse kernel (the
replay's launch), for row-major layers preceded by the Triton transpose of a contiguous
x and, where column pruning removed output features, followed by the launch that writes
them (:mod:`~sparsefx.runtime.cuda.missing_features`); the same for a layer on the sm90
tile kernel (:func:`register_sm90`: C++ calls the library's entry point); or a layer
kernel choice runs dense (:func:`register_dense`) the "direct" way (the same ATen calls
on the unpacked weight), on the CUTLASS kernel, or on a pointer-load configuration of
the dense Triton kernel. Not while Triton launch hooks (profilers) are installed, and
only kernels without global or profile scratch memory. Per call the C++ side checks
that the layer's tensors are the registered ones (same objects, ``row_ptr``/``col_map``
not modified in place), the input's shape, strides, dtype and device, the contiguity of
the packed tensors, and each input's dtype and 16-byte alignment (what Triton
specialised the kernels on); a dense record also that ``values`` was not modified in
place and that its unpacked weight still exists. Any difference takes the Python path.

The parameters are laid out as Triton's own launcher lays them out
(``triton/backends/nvidia/driver.py``: each argument whose signature type is not
``constexpr``, then the global and profile scratch pointers); :func:`launch_params`
builds that list and is tested without a GPU.
"""
from __future__ import annotations

import threading
from typing import Any, Optional, Sequence

import torch

MODULE = "sparsefx_eager_fastpath"
SOURCE = "eager_fastpath.cpp"

#: slots of csrc/eager_fastpath.cpp: tensors a launch takes per call
SLOT_X2, SLOT_VALUES, SLOT_ROW_IDX, SLOT_COL_MAP, SLOT_BIAS_OR_VALUES, SLOT_OUT, \
    SLOT_X_RAW, SLOT_WEIGHT = range(8)
#: the tile kernel's leading tensor arguments (triton_tile.tile_kernel_launch), by slot
TILE_KERNEL_SLOTS = {0: SLOT_X2, 1: SLOT_VALUES, 2: SLOT_ROW_IDX, 3: SLOT_COL_MAP,
                     4: SLOT_BIAS_OR_VALUES, 5: SLOT_OUT}
#: the transpose kernel's tensors (transpose.transpose_launch): reads x, writes x2
TRANSPOSE_SLOTS = {0: SLOT_X_RAW, 1: SLOT_X2}
#: the dense Triton kernel's tensors (triton_dense.pointer_launch): the unpacked weight,
#: x, the bias (the weight again when there is none: never read then), out
DENSE_KERNEL_SLOTS = {0: SLOT_WEIGHT, 1: SLOT_X2, 2: SLOT_BIAS_OR_VALUES, 3: SLOT_OUT}
DENSE_KERNEL_SLOTS_NO_BIAS = {**DENSE_KERNEL_SLOTS, 2: SLOT_WEIGHT}
#: the pruned-feature write's tensors (missing_features.fill_missing_launch): out, the
#: missing features (fixed), the bias; without a bias the missing features stand in
FILL_SLOTS = {0: SLOT_OUT, 2: SLOT_BIAS_OR_VALUES}
FILL_SLOTS_NO_BIAS = {0: SLOT_OUT}

_KIND_SLOT, _KIND_FIXED_PTR = 0, 1
_SCALAR_KINDS = {"i1": 2, "i8": 2, "i16": 3, "i32": 4, "i64": 5, "u1": 6, "u8": 6,
                 "u16": 7, "u32": 8, "u64": 9, "fp32": 10, "f32": 10, "fp64": 11}

_lock = threading.Lock()
_module: Any = None          # the loaded module once installed
_tried = False
#: compiled kernels whose functions records launch (kept loaded while records exist)
_kernels: list = []


def launch_params(signature: dict, args: Sequence, slots: dict) -> Optional[tuple]:
    """The parameter list of one launch, as ``(kind, value)`` pairs in the order of
    Triton's launcher, plus the tensors it reads that are not per-call slots.

    ``signature``: the compiled kernel's argument types by name, in order
    (``CompiledKernel.src.signature``; ``"constexpr"`` for specialised arguments);
    ``args``: the kernel's arguments in the same order; ``slots``: argument position ->
    slot, for the tensors that change per call (their ``args`` entries are ignored).
    Returns ``(params, kept tensors)``, or None for a kernel this path does not launch
    (a tensor descriptor, a tuple argument, an unknown type)."""
    if len(signature) != len(args):
        return None
    params, keep = [], []
    for pos, (ty, arg) in enumerate(zip(signature.values(), args)):
        if ty == "constexpr":
            continue
        if not isinstance(ty, str):
            return None
        if ty.startswith("*"):
            if pos in slots:
                params.append((_KIND_SLOT, slots[pos]))
            elif isinstance(arg, torch.Tensor):
                params.append((_KIND_FIXED_PTR, arg.data_ptr()))
                keep.append(arg)
            else:
                return None
        elif ty in _SCALAR_KINDS and isinstance(arg, (bool, int, float)):
            params.append((_SCALAR_KINDS[ty], arg))
        else:
            return None
    # global and profile scratch: none (launch_step refuses kernels that need them)
    params += [(_KIND_FIXED_PTR, 0), (_KIND_FIXED_PTR, 0)]
    return params, keep


def launch_step(relaunch, args: Sequence, slots: dict) -> Optional[tuple]:
    """``(step spec, kept tensors)`` of a prepared Triton relaunch
    (:class:`~sparsefx.runtime.cuda.triton_launch.Relaunch`) whose arguments are
    ``args``, or None where the C++ path cannot launch it."""
    kernel = relaunch.kernel
    launcher = kernel.run                 # loads the module and function if needed
    if getattr(launcher, "global_scratch_size", 0) or \
            getattr(launcher, "profile_scratch_size", 0):
        return None
    signature = getattr(getattr(kernel, "src", None), "signature", None)
    if not isinstance(signature, dict) or kernel.function is None:
        return None
    built = launch_params(signature, args, slots)
    if built is None:
        return None
    params, keep = built
    num_warps, num_ctas, shared = kernel.packed_metadata
    step = (int(kernel.function), tuple(int(g) for g in relaunch.grid3), int(num_warps),
            int(num_ctas), int(shared), bool(getattr(launcher, "launch_pdl", False)),
            bool(getattr(launcher, "launch_cooperative_grid", False)), params)
    return step, keep


def register(args: tuple, runner) -> bool:
    """Register the launches of ``runner`` (a layer's
    :class:`~sparsefx.runtime.cuda.dispatch._EagerRunner`, built from the call ``args``)
    with the C++ path, building and installing that path on first use. Returns whether
    calls like ``args`` now run in C++."""
    x, values, row_idx, row_ptr, col_map, bias, out_features, activation, fm = args
    if not runner.M or _launch_hooks_set():
        return False
    if not fm and not x.is_contiguous():
        return False
    module = _installed_module()
    if module is None:
        return False
    first = _row_major_transpose(x, runner.M, runner.K, fm)
    if first is None:
        return False
    steps, keep, kernels = first
    tile_args = (None,) * len(TILE_KERNEL_SLOTS) + tuple(runner.fixed) + \
        tuple(runner.relaunch.tail)
    tile = launch_step(runner.relaunch, tile_args, TILE_KERNEL_SLOTS)
    if tile is None:
        return False
    steps.append(tile[0])
    keep += tile[1]
    kernels.append(runner.relaunch.kernel)
    fill = _fill_missing_step(x, runner.M, out_features, fm, runner.plan.missing, bias,
                              activation)
    if fill is None:
        return False
    after, after_keep, after_kernels = fill
    out_shape = [out_features, runner.M] if fm else [*x.shape[:-1], out_features]
    module.register_record(x, values, row_idx, row_ptr, col_map, bias, out_features,
                           activation, fm, out_shape, runner.M, runner.K,
                           keep + after_keep, steps, after_steps=after)
    _keep_loaded(kernels + after_kernels)
    return True


def register_sm90(args: tuple, M: int, K: int, native: tuple, schedule: tuple,
                  missing: Optional[torch.Tensor] = None,
                  keep: tuple = ()) -> bool:
    """Register a sparse layer that kernel choice runs on the sm90 tile kernel: for a
    row-major layer the Triton transpose of x, then the library's entry point with the
    fixed arguments ``native`` (:func:`sm90_tile.native_entry`) and the layer's
    ``schedule`` tensors, then, with ``missing`` (the plan's pruned-away output features
    where the kernel does not write them itself), the launch that writes those. The
    record keeps ``schedule`` and ``keep`` (other tensors ``native`` points to: the
    plan's ``out_positions``) alive. Returns whether calls like ``args`` now run in
    C++."""
    x, values, row_idx, row_ptr, col_map, bias, out_features, activation, fm = args
    if not M or ((not fm or missing is not None) and _launch_hooks_set()):
        return False
    if not fm and not x.is_contiguous():
        return False
    if fm and (x.stride(1) != 1 or x.data_ptr() % 16):
        return False
    module = _installed_module()
    if module is None:
        return False
    first = _row_major_transpose(x, M, K, fm)
    if first is None:
        return False
    steps, keep_first, kernels = first
    fill = _fill_missing_step(x, M, out_features, fm, missing, bias, activation)
    if fill is None:
        return False
    after, after_keep, after_kernels = fill
    out_shape = [out_features, M] if fm else [*x.shape[:-1], out_features]
    module.register_record(x, values, row_idx, row_ptr, col_map, bias, out_features,
                           activation, fm, out_shape, M, K,
                           keep_first + list(schedule) + list(keep) + after_keep, steps,
                           native, after)
    _keep_loaded(kernels + after_kernels)
    return True


def register_dense(args: tuple, weight: torch.Tensor,
                   native: Optional[tuple[int, int, int, int]] = None,
                   triton_launch=None) -> bool:
    """Register a layer that kernel choice runs dense on its unpacked ``weight`` (kept
    by ``dispatch.dense_weight``'s cache, which the record only refers to): the
    "direct" way (``dispatch.dense_forward``: ``F.linear``, or ``addmm`` on
    feature-major tensors); with ``native`` (:func:`sm90_dense.native_entry`) on the
    CUTLASS kernel; with ``triton_launch`` (:func:`triton_dense.eager_launch` of this
    call, already run once) on the dense Triton kernel. Returns whether calls like
    ``args`` now run in C++."""
    x, values, row_idx, row_ptr, col_map, bias, out_features, activation, fm = args
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        return False
    steps, keep, kernels = [], [], []
    if triton_launch is not None:
        if not fm or _launch_hooks_set():
            return False
        relaunch = triton_launch.prepare()
        if relaunch is None:
            return False
        slots = DENSE_KERNEL_SLOTS if bias is not None else DENSE_KERNEL_SLOTS_NO_BIAS
        built = launch_step(relaunch, (None,) * len(slots) + tuple(relaunch.tail), slots)
        if built is None:
            return False
        steps, keep, kernels = [built[0]], built[1], [relaunch.kernel]
    module = _installed_module()
    if module is None:
        return False
    entry, config, dtype, sms = native or (0, 0, 0, 0)
    module.register_dense(x, values, row_idx, row_ptr, col_map, bias, out_features,
                          activation, fm, weight, entry, config, dtype, sms, keep, steps)
    _keep_loaded(kernels)
    return True


def _row_major_transpose(x, M: int, K: int, feature_major: bool) -> Optional[tuple]:
    """``(steps, kept tensors, kernels)`` a record starts with: for a row-major layer the
    Triton transpose of x into the x2 slot, for a feature-major one nothing; None where
    the C++ path cannot launch the transpose."""
    if feature_major:
        return [], [], []
    transpose = _transpose_step(x, M, K)
    if transpose is None:
        return None
    (step, kept), kernel = transpose
    return [step], list(kept), [kernel]


def _fill_missing_step(x, M: int, N: int, feature_major: bool,
                       missing: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                       activation: str) -> Optional[tuple]:
    """``(steps, kept tensors, kernels)`` a record ends with: the launch that writes the
    output features ``missing`` (pruned away: not in ``col_map``) of an ``N``-feature,
    ``M``-token output, as the Python path makes it after the tile kernel; nothing when
    no feature is missing. None where the C++ path cannot launch it (the Python path has
    not run it yet, or Triton's launcher is one this module does not know)."""
    from sparsefx.runtime.cuda.missing_features import fill_missing_launch
    if missing is None:
        return [], [], []
    out2 = torch.empty((N, M) if feature_major else (M, N), dtype=x.dtype,
                       device=x.device)
    launch = fill_missing_launch(out2, feature_major, missing, bias, activation)
    if launch is None:
        return [], [], []
    relaunch = launch.prepare()
    if relaunch is None:
        return None
    slots = FILL_SLOTS if bias is not None else FILL_SLOTS_NO_BIAS
    args = (None, missing, None if bias is not None else missing) + tuple(relaunch.tail)
    built = launch_step(relaunch, args, slots)
    if built is None:
        return None
    step, kept = built
    return [step], list(kept), [relaunch.kernel]


def _keep_loaded(kernels: list) -> None:
    """Hold the compiled kernels whose functions records launch (once each)."""
    with _lock:
        _kernels.extend(k for k in kernels if not any(k is kept for kept in _kernels))


def _transpose_step(x, M: int, K: int):
    from sparsefx.runtime.cuda.transpose import transpose_launch
    x2d = x.reshape(M, K)
    y = torch.empty(K, M, dtype=x.dtype, device=x.device)
    relaunch = transpose_launch(x2d, y).prepare()
    if relaunch is None:
        return None
    step = launch_step(relaunch, (None, None, *relaunch.tail), TRANSPOSE_SLOTS)
    return None if step is None else (step, relaunch.kernel)


def _launch_hooks_set() -> bool:
    """Whether Triton would call launch hooks (a profiler such as proton): the C++ path
    does not call them. Triton >= 3.5 keeps each hook as a chain, empty by default."""
    try:
        from triton import knobs
    except ImportError:                # pragma: no cover - older triton
        return True
    hooks = (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook)
    return any(h is not None and (not hasattr(h, "calls") or bool(h.calls)) for h in hooks)


def _installed_module():
    """The C++ module with its kernel registered for CUDA, or None (not buildable here,
    or disabled); built and installed on the first call."""
    global _module, _tried
    with _lock:
        if _tried:
            return _module
        _tried = True
        from sparsefx.runtime.cuda import autograd_shortcut, build
        from sparsefx.runtime.cuda.dispatch import tile_linear_cuda
        from sparsefx.runtime.ops import tile_linear
        module = build.load_torch_module(MODULE, SOURCE)
        if module is None:
            return None
        if autograd_shortcut.hand_backend_to_native(
                tile_linear, lambda: module.install(tile_linear_cuda), module.call):
            _module = module
        return _module


def active() -> bool:
    """Whether the C++ path is installed in this process."""
    return _module is not None


def may_register() -> bool:
    """False once the C++ path was tried and cannot be had here: callers then skip
    preparing registrations on their (Python) hot path."""
    return _module is not None or not _tried


def why_not() -> Optional[str]:
    """Why the C++ module could not be built or loaded here (None if it was, or was
    never tried)."""
    from sparsefx.runtime.cuda import build
    return build.why_not(MODULE)


def clear() -> None:
    """Forget every record (later calls take the Python path until re-registered)."""
    if _module is not None:
        _module.clear()
    with _lock:
        _kernels.clear()


def stats() -> tuple[int, int, int]:
    """(calls run by a record, calls passed to Python, records) since the last
    :func:`reset_stats`; zeros when the C++ path is not installed."""
    return tuple(_module.stats()) if _module is not None else (0, 0, 0)


def reset_stats() -> None:
    if _module is not None:
        _module.reset_stats()


__all__ = ["register", "register_sm90", "register_dense", "launch_params", "launch_step",
           "active", "may_register", "why_not", "clear", "stats", "reset_stats", "MODULE"]
