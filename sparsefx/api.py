"""Public entry points: :func:`compile` and :func:`prune`."""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Optional

import torch
from torch import fx, nn

from sparsefx.capture import capture, check_inputs_run, normalize_inputs
from sparsefx.config import CompileConfig, ExcludeSpec, make_config
from sparsefx.errors import ConfigError
from sparsefx.layers import get_attr_path, matrix_to_weight
from sparsefx.log import LayerRow, PassLog
from sparsefx.passes import analysis_passes, rewrite_passes
from sparsefx.passes.choose_kernel import KERNEL_META
from sparsefx.passes.infra import LAYER_META, PassContext, PassManager


def compile(model: nn.Module, example_inputs: Any = None, *, pattern: str = "tile",
            sparsity: float = 0.5, G: int = 128, importance: str = "magnitude",
            calibration: Optional[Iterable[Any]] = None,
            loss_fn: Optional[Callable[..., Any]] = None, exclude: ExcludeSpec = None,
            delta: float = 0.0, apriori: bool = False, column_share: float = 0.25,
            min_density: float = 0.0, max_density: float = 1.0,
            layout: str = "row_major") -> fx.GraphModule:
    """Prune ``model`` to a sparsity pattern and rewrite it to run sparse ops.

    Args:
        model: the trained model. It is never modified; sparsefx works on a copy.
        example_inputs: a tensor, a tuple of positional args or a dict of keyword args
            the model runs on. Optional for models ``torch.fx.symbolic_trace`` can
            trace; needed for the ``torch.export`` fallback (most HF models) and for
            shape-dependent decisions at compile time.
        pattern: ``"tile"`` — tile-wise (TW) sparsity, paper 002.
        sparsity: fraction of all prunable weights to remove, in ``[0, 1)``. Ranking is
            global, so each layer ends with its own sparsity (see ``sm.log``).
        G: tile width in output features (64 or 128 suit GPUs). Layers with fewer
            than ``G`` output features are left dense.
        importance: ``"magnitude"`` (``|w|``) or ``"taylor"`` (``(g·w)^2`` summed over
            ``calibration``; needs ``calibration``).
        calibration: iterable of model inputs (same forms as ``example_inputs``).
        loss_fn: ``loss_fn(output, batch) -> scalar`` for Taylor scores; default is the
            label-free ``0.5 * mean(output^2)``.
        exclude: layer names, regexes (full match) or callables ``(name, shape) ->
            bool`` (or a list) naming layers to keep dense.
        delta: TEW overlay: prune ``sparsity + delta`` tile-wise, then restore the
            ``delta`` most important elements.
        apriori: tune column scores with element-wise pruning first (Alg. 2).
        column_share: share of the element budget taken by whole-output-feature
            (column) pruning before in-tile row pruning.
        min_density / max_density: per-layer bounds on the kept fraction.
        layout: ``"row_major"`` keeps activations ``[tokens, features]``;
            ``"feature_major"`` runs chains of sparse layers on ``[features, tokens]``
            activations (the tile kernels' fast layout) with transposes at chain
            boundaries. Row-major is the default because, measured end to end on BERT
            (bench/RESULTS.md), the boundary transposes still cost more than they save.

    Returns:
        A ``torch.fx.GraphModule`` running ``sparsefx`` ops, with ``.log`` (a
        :class:`~sparsefx.log.PassLog`).
    """
    cfg = make_config(pattern=pattern, sparsity=sparsity, G=G, importance=importance,
                      calibration=calibration, loss_fn=loss_fn, exclude=exclude, delta=delta,
                      apriori=apriori, column_share=column_share, min_density=min_density,
                      max_density=max_density, layout=layout)
    gm, ctx, log = _capture_and_analyse(model, example_inputs, cfg)
    gm, log = PassManager(rewrite_passes())(gm, ctx, log)
    _fill_layer_rows(log, ctx, gm)
    gm.log = log
    return gm


def prune(model: nn.Module, example_inputs: Any = None, **options: Any) -> nn.Module:
    """A dense copy of ``model`` with exactly the masks :func:`compile` would use.

    Takes the same keyword options as :func:`compile`. Pruned weights are set to zero;
    the copy keeps the model's own class and code, so it can be fine-tuned (re-apply the
    masks after each optimiser step) or used as the reference for the compiled model.
    The copy has ``.sparsefx_masks`` (``{weight name: bool mask}``) and ``.log``.
    """
    cfg = make_config(**options)
    gm, ctx, log = _capture_and_analyse(model, example_inputs, cfg)
    _fill_layer_rows(log, ctx)
    pruned = copy.deepcopy(model)
    masks = {}
    with torch.no_grad():
        for info in ctx.prunable_layers():
            mask = info.mask()
            if mask is None:
                continue
            weight = get_attr_path(pruned, info.weight_attr)
            mask = matrix_to_weight(mask, info.kind, info.weight_shape).to(weight.device)
            weight.mul_(mask)
            masks[info.weight_attr] = mask
    pruned.sparsefx_masks = masks
    pruned.log = log
    return pruned


def _capture_and_analyse(model: nn.Module, example_inputs: Any, cfg: CompileConfig):
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    args, kwargs = normalize_inputs(example_inputs)
    if args is not None:
        check_inputs_run(model, args, kwargs)
    working_copy = copy.deepcopy(model)
    captured = capture(working_copy, args, kwargs)
    ctx = PassContext(config=cfg, model=model, example_args=args, example_kwargs=kwargs,
                      frontend=captured.frontend)
    log = PassLog(capture={"frontend": captured.frontend,
                           "fallback_reason": captured.fallback_reason})
    gm, log = PassManager(analysis_passes(cfg))(captured.gm, ctx, log)
    return gm, ctx, log


def _kernel_timings(gm: fx.GraphModule) -> dict[str, dict[str, Any]]:
    """Per layer, the sparse and dense times ``choose_kernel`` measured (GPU only)."""
    timings = {}
    for node in gm.graph.nodes:
        kernel, info = node.meta.get(KERNEL_META), node.meta.get(LAYER_META)
        if kernel and info is not None:
            timings[info.name] = {"sparse_ms": kernel.get("sparse_ms"),
                                  "dense_ms": kernel.get("dense_ms")}
            if kernel.get("choice") == "dense":
                info.op = f"{info.op} -> dense fallback (faster here)"
    return timings


def _fill_layer_rows(log: PassLog, ctx: PassContext,
                     gm: Optional[fx.GraphModule] = None) -> None:
    cfg = ctx.config
    timings = _kernel_timings(gm) if gm is not None else {}
    total = kept = 0
    for info in ctx.layers.values():
        achieved = info.achieved_sparsity()
        if info.prunable and achieved is not None:
            total += info.numel
            kept += round((1 - achieved) * info.numel)
        log.layers.append(LayerRow(
            name=info.name, weight_shape=list(info.weight_shape),
            pattern=("tew" if cfg.delta > 0 else "tile") if info.prunable else "-",
            target_sparsity=cfg.sparsity if info.prunable else None,
            achieved_sparsity=achieved, op=info.op if info.prunable else "unchanged",
            note=info.skip_reason, **timings.get(info.name, {})))
    log.summary = {"pattern": cfg.pattern, "G": cfg.G, "importance": cfg.importance,
                   "target_sparsity": cfg.sparsity, "delta": cfg.delta,
                   "prunable_layers": sum(1 for i in ctx.layers.values() if i.prunable),
                   "skipped_layers": sum(1 for i in ctx.layers.values() if not i.prunable),
                   "achieved_sparsity": (1 - kept / total) if total else None}
