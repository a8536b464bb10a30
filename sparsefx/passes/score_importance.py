"""score_importance: give every element of every prunable weight an importance score.

Why: global ranking (``prune_tiles``) compares units across layers, so every layer needs
scores on the same scale, computed once.

* ``magnitude``: ``|w|``.
* ``taylor`` (paper 002 eq. 3, first-order Taylor): ``sum over calibration batches of
  (g * w)^2`` where ``g = dL/dw``. With ``loss_fn`` the loss is ``loss_fn(output,
  batch)``. Without it sparsefx uses a label-free loss: **half the mean squared
  output**, ``0.5 * mean(y^2)`` summed over the model's floating-point outputs. Its
  gradient ``mean(y * dy/dw)`` is not zero at the dense weights (unlike a loss against
  the model's own outputs as targets), so it measures how much each weight moves the
  output. Gradients are taken on a private copy of the caller's model in eval mode.

Before: ``find_prunable`` ran. After: each prunable ``LayerInfo.importance`` is a float32
CPU ``[N, K]`` tensor in matrix view. The graph is unchanged.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

import torch
from torch import fx, nn

from sparsefx.errors import ConfigError
from sparsefx.layers import get_attr_path, weight_to_matrix
from sparsefx.passes.infra import PassContext, PassResult, Record


class ScoreImportance:
    name = "score_importance"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        todo = [info for info in ctx.prunable_layers() if info.importance is None]
        if not todo:
            return PassResult(gm, False, [])
        method = ctx.config.importance
        if method == "magnitude":
            weights = {info.weight_attr: get_attr_path(gm, info.weight_attr) for info in todo}
            scores = {attr: w.detach().abs() for attr, w in weights.items()}
        else:
            model = ctx.model if ctx.model is not None else gm
            scores = taylor_scores(model, ctx.config.calibration, ctx.config.loss_fn,
                                   [info.weight_attr for info in todo])
        records = []
        for info in todo:
            # Ranking runs on the CPU whatever the model's device: it is a one-off,
            # and CPU sorting keeps the masks deterministic.
            info.importance = weight_to_matrix(scores[info.weight_attr], info.kind) \
                .to(device="cpu", dtype=torch.float32).contiguous()
            records.append(Record("scored", info.name, {
                "method": method, "mean": float(info.importance.mean())}))
        return PassResult(gm, False, records)


def taylor_scores(model: nn.Module, calibration: Iterable[Any], loss_fn: Any,
                  weight_attrs: list[str]) -> dict[str, torch.Tensor]:
    """``sum_batches (dL/dw * w)^2`` for each named weight, on a copy of ``model``."""
    model = copy.deepcopy(model).eval()
    params = {attr: get_attr_path(model, attr) for attr in weight_attrs}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    totals = {attr: torch.zeros_like(p, dtype=torch.float32) for attr, p in params.items()}
    batches = 0
    for batch in calibration:
        args, kwargs = _batch_to_call(batch)
        output = model(*args, **kwargs)
        loss = loss_fn(output, batch) if loss_fn is not None else half_mean_square(output)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (attr, p), g in zip(params.items(), grads):
            if g is not None:
                totals[attr] += (g.detach() * p.detach()).float().pow(2)
        batches += 1
    if batches == 0:
        raise ConfigError("calibration= yielded no batches; taylor importance needs at least one")
    return totals


def half_mean_square(output: Any) -> torch.Tensor:
    """The label-free calibration loss: ``0.5 * mean(y^2)`` over every float output."""
    leaves = [t for t in _tensor_leaves(output) if t.is_floating_point() and t.requires_grad]
    if not leaves:
        raise ConfigError("the model's output has no floating-point tensor that depends on "
                          "its weights; pass loss_fn=(output, batch) -> scalar")
    return sum(0.5 * t.float().pow(2).mean() for t in leaves)


def _tensor_leaves(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for v in output.values() for t in _tensor_leaves(v)]
    if isinstance(output, (list, tuple)):
        return [t for v in output for t in _tensor_leaves(v)]
    return []


def _batch_to_call(batch: Any) -> tuple[tuple, dict]:
    if isinstance(batch, dict):
        return (), batch
    if isinstance(batch, (tuple, list)):
        return tuple(batch), {}
    return (batch,), {}
