"""End-to-end model benchmark: dense eager / dense torch.compile / sparsefx tile G=128.

Models (random weights, fp16 on the GPU):

* ``bert``  — HF ``BertModel`` BERT-base from config, batch 32 × seq 128;
* ``vit``   — HF ``ViTModel`` ViT-B/16 from config, batch 32 × 224² images;
* ``llama`` — a stack of 4 Llama-style MLP blocks (SiLU-gated, 4096 → 11008 → 4096,
  RMSNorm + residual), 4096 tokens.

Why these columns (see /work/shared/BENCHMARKS.md): eager wall time on these models is
mostly launch overhead, so sides are timed **inside a CUDA graph** where possible
(sparsefx captured with ``torch.cuda.graphs``; dense ``torch.compile`` with
``mode="reduce-overhead"``, which uses CUDA graphs itself; ``+ torch.compile`` rows compile
the sparsefx model the same way). **dense eager** is the faster of a CUDA-graph replay and
a plain loop, because HF models take a slower path under capture (they treat stream
capture as tracing and materialise the attention mask, so SDPA runs its fp32 math
kernel); the table names which one it was. A side timed without a graph is marked ``*``. The GPU time of one eager forward is split by
``torch.profiler`` kernel names into sparse/dense GEMMs, fused non-GEMM kernels
(``sparsefx`` norm kernels), transposes/copies (layout conversions) and everything else.

Speedups are dense-eager-time / time, measured in the same run. Compilation (pruning +
rewriting + kernel choice) runs with the model already on the GPU in fp16, as a user
would compile it. A markdown table goes to stdout and ``$OUT/bench_models.md`` when ``$OUT``
is set.

    python bench/bench_models.py                 # GPU, all models (< 8 minutes)
    python bench/bench_models.py --models bert --sparsities 0.75
    python bench/bench_models.py --smoke         # tiny configs on CPU: checks the script
    python bench/bench_models.py --kernels 8     # + each column's 8 costliest kernels
    python bench/bench_models.py --compile-sparsities 0.75   # + torch.compile only at 75%
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sparsefx  # noqa: E402

GEMM_WORDS = ("gemm", "cutlass", "xmma", "nvjet", "_tile_linear", "tile_block", "matmul",
              "sm90", "sm80")
FUSED_WORDS = ("_brln_",)
TRANSPOSE_WORDS = ("copy", "transpose", "permute")


# --------------------------------------------------------------------------- models
class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class LlamaMLP(nn.Module):
    """``down(silu(gate(x)) * up(x))`` with a pre-norm residual, as in Llama blocks."""

    def __init__(self, d: int, inner: int):
        super().__init__()
        self.norm = RMSNorm(d)
        self.gate = nn.Linear(d, inner, bias=False)
        self.up = nn.Linear(d, inner, bias=False)
        self.down = nn.Linear(inner, d, bias=False)

    def forward(self, x):
        h = self.norm(x)
        return x + self.down(nn.functional.silu(self.gate(h)) * self.up(h))


class LlamaMLPStack(nn.Module):
    def __init__(self, d: int, inner: int, layers: int):
        super().__init__()
        self.blocks = nn.Sequential(*[LlamaMLP(d, inner) for _ in range(layers)])

    def forward(self, x):
        return self.blocks(x)


def build(name: str, smoke: bool) -> tuple[nn.Module, tuple]:
    """``(model, example_args)`` on the CPU in fp32."""
    torch.manual_seed(0)
    if name == "bert":
        from transformers import BertConfig, BertModel
        cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=256, vocab_size=100) if smoke else BertConfig()
        batch, seq = (2, 16) if smoke else (32, 128)
        model = BertModel(cfg, add_pooling_layer=False)
        return model.eval(), (torch.randint(0, cfg.vocab_size, (batch, seq)),)
    if name == "vit":
        from transformers import ViTConfig, ViTModel
        cfg = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=256, image_size=32, patch_size=8) if smoke \
            else ViTConfig()
        batch = 2 if smoke else 32
        model = ViTModel(cfg, add_pooling_layer=False)
        return model.eval(), (torch.randn(batch, 3, cfg.image_size, cfg.image_size),)
    if name == "llama":
        d, inner, layers, tokens = (64, 256, 2, 32) if smoke else (4096, 11008, 4, 4096)
        return LlamaMLPStack(d, inner, layers).eval(), (torch.randn(tokens, d),)
    raise ValueError(f"unknown model {name!r}")


# --------------------------------------------------------------------------- timing
def first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    if isinstance(out, (tuple, list)):
        return first_tensor(out[0])
    if isinstance(out, dict):
        return first_tensor(next(iter(out.values())))
    raise TypeError(type(out))


def time_ms(fn: Callable[[], object], device: str, iters: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1e3 / iters


def graphed(model: nn.Module, args: tuple, device: str) -> tuple[Callable[[], object], bool]:
    """A replay function of ``model(*args)`` captured in a CUDA graph, or the eager call
    (second value False) when capture is impossible (CPU, or the model refuses)."""
    eager = lambda: model(*args)  # noqa: E731
    if device != "cuda":
        return eager, False
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):                    # warm up (kernel choice, autotuning)
                model(*args)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(*args)
        return graph.replay, True
    except Exception as exc:  # noqa: BLE001 - report and fall back to eager timing
        print(f"  (CUDA graph capture failed: {type(exc).__name__}: {exc}; timing eagerly)")
        torch.cuda.synchronize()
        return eager, False


def profile_split(fn: Callable[[], object], device: str,
                  kernels: Optional[dict] = None) -> dict[str, float]:
    """GPU (or CPU) time of one forward, in ms, by kernel category. ``kernels``, when
    given, receives the time per kernel name (for ``--kernels``)."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    fn()
    with profile(activities=activities) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    split = {"gemm": 0.0, "fused": 0.0, "transpose": 0.0, "other": 0.0}
    for evt in prof.events():
        if device == "cuda":
            if evt.device_type != torch.autograd.DeviceType.CUDA:
                continue
            us = evt.device_time
        else:   # CPU smoke mode: leaf aten ops only
            if not evt.name.startswith("aten::") or evt.cpu_children:
                continue
            us = evt.self_cpu_time_total
        split[classify(evt.name)] += us / 1e3
        if kernels is not None:
            kernels[evt.name] = kernels.get(evt.name, 0.0) + us / 1e3
    return split


def classify(name: str) -> str:
    low = name.lower()
    if any(w in low for w in FUSED_WORDS):
        return "fused"
    if any(w in low for w in GEMM_WORDS) or low in ("aten::mm", "aten::addmm", "aten::bmm"):
        return "gemm"
    if any(w in low for w in TRANSPOSE_WORDS) or low in ("aten::clone", "aten::contiguous"):
        return "transpose"
    return "other"


# --------------------------------------------------------------------------- runs
@dataclass
class Row:
    model: str
    column: str
    ms: float
    graphed: bool
    split: dict = field(default_factory=dict)
    transposes: Optional[int] = None
    err: Optional[float] = None
    kernels: dict = field(default_factory=dict)
    note: str = ""


def run_model(name: str, sparsities: list[float], args) -> list[Row]:
    device, dtype = ("cpu", torch.float32) if args.smoke else ("cuda", torch.float16)
    model, example = build(name, args.smoke)
    G = 16 if args.smoke else 128
    inputs = tuple(t.to(device) if t.is_floating_point() is False else t.to(device, dtype)
                   for t in example)
    dense = model.to(device, dtype)
    rows = []
    with torch.no_grad():
        fn, ok = graphed(dense, inputs, device)
        graph_ms = time_ms(fn, device, args.iters)
        loop_ms = time_ms(lambda: dense(*inputs), device, args.iters)
        # The baseline is the faster of the two: HF models take slower code paths
        # under CUDA-graph capture (they materialise the attention mask, so SDPA drops
        # to its fp32 math kernel), while the plain loop pays per-op launch overhead.
        print(f"  dense eager: CUDA-graph replay {graph_ms:.3f} ms, plain loop "
              f"{loop_ms:.3f} ms")
        eager_ms = min(graph_ms, loop_ms)
        how = "CUDA graph" if graph_ms <= loop_ms and ok else "no graph"
        kernels: dict = {}
        rows.append(Row(name, "dense eager", eager_ms, ok and graph_ms <= loop_ms,
                        profile_split(lambda: dense(*inputs), device, kernels),
                        kernels=kernels, note=how))
        if not args.no_compile:
            rows.append(_compiled_row(name, "dense torch.compile", dense, inputs, device,
                                      args))
        for layout in args.layouts:
            for sparsity in sparsities:
                rows += _sparse_rows(name, model, example, inputs, sparsity, G, device,
                                     dtype, args, layout)
    return rows


def _compiled_row(name, label, module, inputs, device, args, ref=None,
                  transposes=None) -> Row:
    """``torch.compile(module, mode="reduce-overhead")`` timed (CUDA graphs on the GPU);
    with ``ref`` also its relative error. A failure becomes a NaN row, not an abort."""
    mode = "reduce-overhead" if device == "cuda" else "default"
    try:
        compiled = torch.compile(module, mode=mode)
        ms = time_ms(lambda: compiled(*inputs), device, args.iters, warmup=5)
        err = None if ref is None else _rel_err(first_tensor(compiled(*inputs)).float(), ref)
    except Exception as exc:  # noqa: BLE001 - e.g. no compiler toolchain on this machine
        print(f"  {label} failed ({type(exc).__name__}: {str(exc)[:300]})")
        return Row(name, label, float("nan"), False)
    if err is not None:
        print(f"  {label}: rel err {err:.2e}")
    return Row(name, label, ms, device == "cuda", transposes=transposes, err=err)


def _sparse_rows(name, model, example, inputs, sparsity, G, device, dtype, args,
                 layout="row_major") -> list[Row]:
    """The sparsefx row, plus ``+ torch.compile`` of the sparsefx model (inductor fuses
    the non-GEMM ops around the sparse ops, like it does for dense) unless
    ``--no-compile``."""
    # Compile on the device and in the dtype the model runs in: graphs captured with
    # torch.export are specialised to the example inputs' device, and compiling there
    # lets choose_kernel time each layer at its real shape.
    model.to(device, dtype)
    t0 = time.perf_counter()
    sm = sparsefx.compile(model, inputs, G=G, sparsity=sparsity, layout=layout)
    pm = sparsefx.prune(model, inputs, G=G, sparsity=sparsity)
    compile_s = time.perf_counter() - t0
    transposes = next((r["transposes"] for p in sm.log.passes if p.name == "propagate_layout"
                       for r in p.records if r.get("action") == "summary"), None)
    chosen = [r for p in sm.log.passes if p.name == "choose_kernel" for r in p.records
              if r.get("action") == "kernel_chosen"]
    dense_layers = sum(1 for r in chosen if r["choice"] == "dense")
    print(f"  kernel choice: {len(chosen) - dense_layers} sparse, {dense_layers} dense fallback")
    fn, ok = graphed(sm, inputs, device)
    ms = time_ms(fn, device, args.iters)
    kernels: dict = {}
    split = profile_split(lambda: sm(*inputs), device, kernels)
    ref = first_tensor(pm(*inputs)).float()
    err = _rel_err(first_tensor(sm(*inputs)).float(), ref)
    print(f"  {name} {sparsity:.0%} {layout}: compiled in {compile_s:.1f}s, rel err {err:.2e}")
    label = f"sparsefx {sparsity:.0%} {layout}"
    rows = [Row(name, label, ms, ok, split, transposes, err, kernels)]
    if not args.no_compile and (args.compile_sparsities is None
                                or any(abs(sparsity - s) < 1e-9
                                       for s in args.compile_sparsities)):
        rows.append(_compiled_row(name, label + " + torch.compile", sm, inputs, device,
                                  args, ref, transposes))
    return rows


def _rel_err(out, ref) -> float:
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


# --------------------------------------------------------------------------- report
def table(rows: list[Row]) -> str:
    lines = ["| model | column | ms | vs dense eager | vs dense compile | GEMM ms | fused "
             "non-GEMM ms | transposes ms | other ms | transposes (#) | rel err |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        eager = next(r.ms for r in rows if r.model == row.model and r.column == "dense eager")
        comp = next((r.ms for r in rows if r.model == row.model
                     and r.column == "dense torch.compile"), float("nan"))
        s = row.split
        label = row.column + (f" ({row.note})" if row.note else "")
        cells = [row.model, label + ("" if row.graphed else " *"), f"{row.ms:.3f}",
                 f"{eager / row.ms:.2f}x", f"{comp / row.ms:.2f}x"]
        cells += [f"{s[k]:.3f}" if s else "" for k in ("gemm", "fused", "transpose", "other")]
        cells += ["" if row.transposes is None else str(row.transposes),
                  "" if row.err is None else f"{row.err:.1e}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("`*` timed eagerly (no CUDA graph). Split = one eager forward under "
                 "torch.profiler, by kernel name.")
    return "\n".join(lines)


def kernel_tables(rows: list[Row], top: int) -> str:
    """Per profiled column, its ``top`` kernels by GPU time (ms in one eager forward)."""
    out = []
    for row in rows:
        if not row.kernels:
            continue
        out.append(f"#### {row.model}: {row.column}")
        out.append("| ms | kernel |")
        out.append("|---|---|")
        for kname, ms in sorted(row.kernels.items(), key=lambda kv: -kv[1])[:top]:
            out.append(f"| {ms:.3f} | `{kname[:110]}` |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["bert", "vit", "llama"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.5, 0.75, 0.9])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny configs on the CPU")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--layouts", nargs="+", default=["row_major", "feature_major"],
                        choices=["row_major", "feature_major"],
                        help="sparsefx compile(layout=...) variants to time")
    parser.add_argument("--compile-sparsities", nargs="+", type=float, default=None,
                        help="time `torch.compile(sparsefx model)` only at these "
                             "sparsities (default: all)")
    parser.add_argument("--kernels", type=int, default=0, metavar="N",
                        help="also print each column's N most expensive kernels")
    args = parser.parse_args(argv)
    if args.smoke:
        args.iters = min(args.iters, 2)
    elif not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (use --smoke to check the script on a CPU)")
    rows = []
    start = time.perf_counter()
    for name in args.models:
        print(f"{name} ...", flush=True)
        rows += run_model(name, args.sparsities, args)
        print(f"  done at {time.perf_counter() - start:.0f}s", flush=True)
    text = table(rows)
    if args.kernels:
        text += "\n\n" + kernel_tables(rows, args.kernels)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_models.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
