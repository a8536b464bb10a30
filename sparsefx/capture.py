"""Capture: turn a model into an FX ``GraphModule`` and record shapes in node meta.

``torch.fx.symbolic_trace`` runs first: it keeps ``nn.Module`` calls as ``call_module``
nodes, which keeps the graph readable. Models with data-dependent Python (most HF
transformers) fail it; then, if example inputs were given, ``torch.export.export``
(non-strict) captures an ATen-level graph and ``ExportedProgram.module()`` gives it back
as a ``GraphModule`` whose parameters keep their original names. The result says which
frontend ran and why a fallback happened.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp

from sparsefx.errors import CaptureError


@dataclass
class Captured:
    gm: fx.GraphModule
    frontend: str                    # "symbolic_trace" or "torch.export"
    fallback_reason: Optional[str]   # why symbolic_trace was not used


def normalize_inputs(example_inputs: Any) -> tuple[Optional[tuple], Optional[dict]]:
    """``example_inputs`` may be a tensor, a tuple/list of positional args, or a dict of
    keyword args. Returns ``(args, kwargs)``; both ``None`` when no inputs were given."""
    if example_inputs is None:
        return None, None
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def check_inputs_run(model: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    except Exception as exc:
        raise CaptureError(
            f"example_inputs do not run the model ({type(exc).__name__}: {exc}); pass the "
            "inputs you would call the model with: a tensor, a tuple of positional args "
            "or a dict of keyword args") from exc


def capture(model: torch.nn.Module, args: Optional[tuple], kwargs: Optional[dict]) -> Captured:
    """Trace ``model`` (which the caller owns a copy of: it becomes the graph's root)."""
    try:
        gm = fx.symbolic_trace(model)
        captured = Captured(gm, "symbolic_trace", None)
    except Exception as trace_exc:
        reason = f"symbolic_trace failed: {type(trace_exc).__name__}: {_first_line(trace_exc)}"
        if args is None and not kwargs:
            raise CaptureError(
                f"{reason}. sparsefx can fall back to torch.export, which needs example "
                "inputs: call sparsefx.compile(model, example_inputs, ...)") from trace_exc
        captured = Captured(_export(model, args, kwargs, reason), "torch.export", reason)
    if args is not None or kwargs:
        propagate_shapes(captured.gm, args or (), kwargs or {})
    return captured


def _export(model: torch.nn.Module, args: tuple, kwargs: dict, reason: str) -> fx.GraphModule:
    try:
        program = torch.export.export(model, args, kwargs, strict=False)
    except Exception as exc:
        raise CaptureError(
            f"{reason}; the torch.export fallback failed too ({type(exc).__name__}: "
            f"{_first_line(exc)}). Make the model traceable (e.g. for HF models pass "
            "use_cache=False in the config, avoid data-dependent Python control flow) "
            "or exclude the untraceable part by compiling a submodule") from exc
    return program.module()


def propagate_shapes(gm: fx.GraphModule, args: tuple, kwargs: dict) -> None:
    """Fill ``node.meta['tensor_meta']`` (and ``'val'`` where missing) by running
    ``gm`` once on the example inputs."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if placeholders and all("val" in n.meta for n in placeholders):
        return  # torch.export already recorded fake values for every node
    values = list(args)
    for node in placeholders[len(args):]:
        if node.target not in kwargs:
            break  # the rest take their defaults
        values.append(kwargs[node.target])
    with torch.no_grad():
        ShapeProp(gm).propagate(*values)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
