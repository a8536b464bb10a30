"""End to end with and without ``fold_pruned_features``, in one run (GPU, fp16, G=128).

For each model and layout the model is compiled twice, with the default pipeline and
with the pass removed. Both are timed as CUDA-graph replays in alternating rounds
(median of each side's rounds), against the dense model in the same process (the
faster of its graph replay and plain loop, as in ``bench_models.py``). Per layer group
it sums what kernel choice measured for the layer as it runs (the sparse time where
choice kept sparse, else the dense time), so the end-to-end difference can be traced to
the layers the pass changes: the producers (BERT/ViT ``intermediate.dense``, whose
pruned outputs are dropped) and their readers (``output.dense``, which lose the input
rows at those features). The models' linear biases are redrawn (HF initialises them
to zero, which would make every folded constant GELU(0) = 0), so the rel err columns
check the folded bias term too.

    python bench/bench_fold.py                         # BERT-base, row-major
    python bench/bench_fold.py --models bert,vit --layouts row_major,feature_major
    python bench/bench_fold.py --smoke                 # tiny BERT on CPU: checks the script
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sparsefx  # noqa: E402
import sparsefx.api  # noqa: E402
from bench_models import build, first_tensor, graphed, profile_split, time_ms  # noqa: E402
from sparsefx.passes import rewrite_passes  # noqa: E402
from sparsefx.passes.fold_pruned_features import FoldPrunedFeatures  # noqa: E402

GROUPS = {"producers (intermediate)": re.compile(r".*layer\.\d+\.intermediate\.dense"),
          "readers (output)": re.compile(r".*layer\.\d+\.output\.dense"),
          "other layers": re.compile(r".*")}


def without_fold() -> list:
    return [p for p in rewrite_passes() if not isinstance(p, FoldPrunedFeatures)]


def compile_model(model, inputs, sparsity, layout, fold: bool):
    original = sparsefx.api.rewrite_passes
    if not fold:
        sparsefx.api.rewrite_passes = without_fold
    try:
        t0 = time.perf_counter()
        sm = sparsefx.compile(model, inputs, G=args.G, sparsity=sparsity, layout=layout)
        return sm, time.perf_counter() - t0
    finally:
        sparsefx.api.rewrite_passes = original


def group_sums(sm) -> dict:
    """Per group: (layers, layers kept sparse, ms as run per kernel choice)."""
    sums = {g: [0, 0, 0.0] for g in GROUPS}
    for row in sm.log.layers:
        if row.sparse_ms is None or row.dense_ms is None:
            continue
        group = next(g for g, pat in GROUPS.items() if pat.fullmatch(row.name))
        dense = "dense fallback" in row.op
        sums[group][0] += 1
        sums[group][1] += 0 if dense else 1
        sums[group][2] += row.dense_ms if dense else row.sparse_ms
    return sums


def folded_count(sm) -> tuple[int, int]:
    records = [r for p in sm.log.passes if p.name == "fold_pruned_features"
               for r in p.records if r["action"] == "folded"]
    return len(records), sum(r["features"] for r in records)


def rel_err(out, ref) -> float:
    out, ref = first_tensor(out).float(), first_tensor(ref).float()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def run(name: str, layout: str, sparsity: float) -> list[str]:
    device, dtype = ("cpu", torch.float32) if args.smoke else ("cuda", torch.float16)
    model, example = build(name, args.smoke)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.bias is not None:
            torch.nn.init.normal_(module.bias, 0.0, 0.5)
    model = model.to(device, dtype)
    inputs = tuple(t.to(device) if not t.is_floating_point() else t.to(device, dtype)
                   for t in example)
    lines = []
    with torch.no_grad():
        dense_graph, ok = graphed(model, inputs, device)
        dense_ms = min(time_ms(dense_graph, device, args.iters),
                       time_ms(lambda: model(*inputs), device, args.iters))
        reference = sparsefx.prune(model, inputs, G=args.G, sparsity=sparsity)
        ref_out = reference(*inputs)
        sides = {}
        for fold in (True, False):
            sm, seconds = compile_model(model, inputs, sparsity, layout, fold)
            replay, captured = graphed(sm, inputs, device)
            sides[fold] = dict(sm=sm, replay=replay, captured=captured, compile_s=seconds,
                               err=rel_err(sm(*inputs), ref_out), rounds=[])
        for r in range(args.rounds):           # alternate which side goes first
            for fold in ((True, False) if r % 2 == 0 else (False, True)):
                sides[fold]["rounds"].append(time_ms(sides[fold]["replay"], device,
                                                     args.iters))
        agree = rel_err(sides[True]["sm"](*inputs), sides[False]["sm"](*inputs))
        for side in sides.values():      # GPU time per kernel name of one eager forward
            side["kernels"] = {}
            profile_split(lambda: side["sm"](*inputs), device, side["kernels"])
    lines.append(f"### {name}, {sparsity:.0%}, {layout}")
    lines.append("")
    lines.append(f"dense: {dense_ms:.3f} ms. Folded vs unfolded outputs: rel diff {agree:.1e}.")
    lines.append("")
    lines.append("| pipeline | layers folded (features) | end to end ms (rounds) | dense/sparse |"
                 " rel err vs pruned dense | " + " | ".join(
                     f"{g}: sparse/layers, ms" for g in GROUPS) + " | compile s |")
    lines.append("|---|---|---|---|---|" + "---|" * len(GROUPS) + "---|")
    for fold in (True, False):
        side = sides[fold]
        ms = statistics.median(side["rounds"])
        n, feats = folded_count(side["sm"])
        groups = group_sums(side["sm"])
        cells = " | ".join(f"{s}/{n_l}, {t:.3f}" for n_l, s, t in groups.values())
        rounds = ", ".join(f"{t:.3f}" for t in side["rounds"])
        graph = "" if side["captured"] else " (no graph)"
        lines.append(f"| {'with fold' if fold else 'without fold'} | {n} ({feats}) | "
                     f"**{ms:.3f}** ({rounds}){graph} | {dense_ms / ms:.2f} | "
                     f"{side['err']:.1e} | {cells} | {side['compile_s']:.0f} |")
    if args.kernels:
        lines += ["", kernel_table(sides[True]["kernels"], sides[False]["kernels"])]
    return lines


def kernel_table(with_fold: dict, without: dict) -> str:
    """The kernels whose GPU time per forward differs most between the two sides."""
    names = sorted(set(with_fold) | set(without),
                   key=lambda k: -abs(with_fold.get(k, 0.0) - without.get(k, 0.0)))
    rows = ["| kernel (one eager forward, profiler) | with fold ms | without ms |",
            "|---|---|---|"]
    for name in names[:args.kernels]:
        rows.append(f"| `{name[:70]}` | {with_fold.get(name, 0.0):.3f} | "
                    f"{without.get(name, 0.0):.3f} |")
    rows.append(f"| total | {sum(with_fold.values()):.3f} | {sum(without.values()):.3f} |")
    return "\n".join(rows)


def main() -> None:
    out_lines = []
    if not args.smoke:
        out_lines.append(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for name in args.models.split(","):
        for layout in args.layouts.split(","):
            for sparsity in (float(s) for s in args.sparsities.split(",")):
                lines = run(name, layout, sparsity)
                print("\n".join(lines) + "\n", flush=True)
                out_lines += lines + [""]
                if os.environ.get("OUT"):        # after each case: a cut run keeps it
                    Path(os.environ["OUT"], "bench_fold.md").write_text(
                        "\n".join(out_lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bert")
    parser.add_argument("--layouts", default="row_major")
    parser.add_argument("--sparsities", default="0.75")
    parser.add_argument("--G", type=int, default=128)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--kernels", type=int, default=10,
                        help="list the N kernels whose time differs most (0: none)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.G, args.iters, args.rounds = 16, 2, 2
    main()
