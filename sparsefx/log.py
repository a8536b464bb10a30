"""The pass log: what each pass did and, per layer, what sparsefx decided.

``print(sm.log)`` shows two tables; ``sm.log.to_json()`` returns the same content as a
JSON string with top-level keys ``capture``, ``summary``, ``passes`` and ``layers``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass
class PassRow:
    name: str
    time_ms: float
    modified: bool
    records: list[dict[str, Any]] = field(default_factory=list)

    def changes(self) -> str:
        """One line saying what changed, e.g. ``pruned 12 layers, skipped 2``."""
        counts: dict[str, int] = {}
        for record in self.records:
            counts[record["action"]] = counts.get(record["action"], 0) + 1
        if not counts:
            return "-" if not self.modified else "modified"
        return ", ".join(f"{action} {n}" for action, n in counts.items())


@dataclass
class LayerRow:
    name: str
    weight_shape: list[int]
    pattern: str
    target_sparsity: Optional[float]
    achieved_sparsity: Optional[float]
    op: str
    note: str = ""
    sparse_ms: Optional[float] = None
    dense_ms: Optional[float] = None


@dataclass
class PassLog:
    passes: list[PassRow] = field(default_factory=list)
    layers: list[LayerRow] = field(default_factory=list)
    capture: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def layer(self, name: str) -> LayerRow:
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(f"no layer {name!r} in the log; layers: {[r.name for r in self.layers]}")

    def to_dict(self) -> dict[str, Any]:
        return {"capture": self.capture, "summary": self.summary,
                "passes": [asdict(p) for p in self.passes],
                "layers": [asdict(row) for row in self.layers]}

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def __str__(self) -> str:
        lines = []
        if self.capture:
            frontend = self.capture.get("frontend", "?")
            reason = self.capture.get("fallback_reason")
            lines.append(f"capture: {frontend}" + (f" (fallback: {reason})" if reason else ""))
        if self.summary:
            lines.append("summary: " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.summary.items()))
        lines.append("")
        lines += _table(["pass", "ms", "modified", "changes"],
                        [[p.name, f"{p.time_ms:.1f}", "yes" if p.modified else "no",
                          p.changes()] for p in self.passes])
        lines.append("")
        lines += _table(["layer", "weight", "pattern", "target", "achieved", "op",
                         "sparse ms", "dense ms", "note"],
                        [[r.name, "x".join(map(str, r.weight_shape)), r.pattern,
                          _fmt(r.target_sparsity), _fmt(r.achieved_sparsity), r.op,
                          _fmt(r.sparse_ms), _fmt(r.dense_ms), r.note]
                         for r in self.layers])
        return "\n".join(lines)

    __repr__ = __str__


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]
