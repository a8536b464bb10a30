"""Pass infrastructure: the pass contract, the shared context and the pass manager.

Modelled on ``torch.fx.passes.infra`` (``PassResult``, a manager that checks the graph
between passes) and on TVM's pass instruments (timing and dumps around every pass):

* a pass is an object with a ``name`` and ``__call__(gm, ctx) -> PassResult``;
* it returns ``PassResult(gm, modified, records)`` where ``records`` are structured
  :class:`Record` objects (layer, action, numbers) that feed the pass log;
* it is idempotent — run twice, the second run reports ``modified=False`` — and keeps
  no state of its own between runs: everything it learns goes into ``node.meta`` or
  the :class:`PassContext`;
* the :class:`PassManager` runs a verifier after each pass, times it, writes a graph
  dump per pass when ``SPARSEFX_DUMP_DIR`` is set, and on failure raises
  :class:`~sparsefx.errors.PassError` naming the pass and the pipeline so far.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol

import torch
from torch import fx

from sparsefx.errors import PassError
from sparsefx.log import PassLog, PassRow

LAYER_META = "sparsefx.layer"      # node.meta key holding a LayerInfo
DUMP_DIR_ENV = "SPARSEFX_DUMP_DIR"


@dataclass
class Record:
    """One structured fact a pass reports: what it did to which layer, with numbers."""

    action: str
    layer: Optional[str] = None
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "layer": self.layer, **self.numbers}


@dataclass
class PassResult:
    gm: fx.GraphModule
    modified: bool
    records: list[Record] = field(default_factory=list)


class Pass(Protocol):
    name: str

    def __call__(self, gm: fx.GraphModule, ctx: "PassContext") -> PassResult: ...


@dataclass
class PassContext:
    """What the passes of one pipeline share: the configuration, the caller's model
    (read-only, for calibration), the example inputs and the per-layer facts."""

    config: Any
    model: Optional[torch.nn.Module] = None
    example_args: Optional[tuple] = None
    example_kwargs: Optional[dict] = None
    frontend: str = "symbolic_trace"
    layers: dict[str, Any] = field(default_factory=dict)   # name -> LayerInfo, in graph order
    stats: dict[str, Any] = field(default_factory=dict)    # model-wide numbers for the log

    @property
    def has_example_inputs(self) -> bool:
        return self.example_args is not None or bool(self.example_kwargs)

    def prunable_layers(self) -> list[Any]:
        return [info for info in self.layers.values() if info.prunable]


# --------------------------------------------------------------------------- verifier
def verify_graph(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Checks every pass must leave true: the graph lints, every sparsefx op in it has
    a fake kernel, and (when shapes were propagated) the new nodes carry shape meta."""
    gm.graph.lint()
    for node in gm.graph.nodes:
        if node.op != "call_function" or not _is_sparsefx_op(node.target):
            continue
        if not _has_fake_kernel(node.target):
            raise AssertionError(f"node {node.name}: op {node.target} has no fake kernel")
        if ctx.has_example_inputs and "val" not in node.meta and "tensor_meta" not in node.meta:
            raise AssertionError(f"node {node.name}: shape meta missing after rewrite")


def _is_sparsefx_op(target: Any) -> bool:
    return isinstance(target, torch._ops.OpOverload) and target.namespace == "sparsefx"


def _has_fake_kernel(op: torch._ops.OpOverload) -> bool:
    from torch._library.simple_registry import singleton
    entry = singleton.find(op._schema.name)
    return entry.fake_impl.kernel is not None


# --------------------------------------------------------------------------- manager
class PassManager:
    """Runs passes in order with verification, timing, dumps and named failures."""

    def __init__(self, passes: Iterable[Pass], *, verify: bool = True,
                 dump_dir: Optional[str] = None):
        self.passes = list(passes)
        self.verify = verify
        self.dump_dir = dump_dir if dump_dir is not None else os.environ.get(DUMP_DIR_ENV)

    def __call__(self, gm: fx.GraphModule, ctx: PassContext,
                 log: Optional[PassLog] = None) -> tuple[fx.GraphModule, PassLog]:
        log = log if log is not None else PassLog()
        done: list[str] = []
        for index, p in enumerate(self.passes):
            start = time.perf_counter()
            try:
                result = p(gm, ctx)
                if self.verify:
                    verify_graph(result.gm, ctx)
            except Exception as exc:  # re-raised with the pipeline attached
                raise PassError(
                    f"pass {p.name!r} failed: {exc}\n(pipeline so far: "
                    f"{' -> '.join(done) or 'nothing'}; set {DUMP_DIR_ENV} to dump the "
                    f"graph after each pass)") from exc
            seconds = time.perf_counter() - start
            gm = result.gm
            done.append(p.name)
            log.passes.append(PassRow(p.name, seconds * 1e3, result.modified,
                                      [r.to_dict() for r in result.records]))
            self._dump(gm, index, p.name)
        return gm, log

    def _dump(self, gm: fx.GraphModule, index: int, name: str) -> None:
        if not self.dump_dir:
            return
        path = Path(self.dump_dir)
        path.mkdir(parents=True, exist_ok=True)
        code = gm.print_readable(print_output=False)
        (path / f"{index:02d}_{name}.txt").write_text(f"{gm.graph}\n\n{code}")
