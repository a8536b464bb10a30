"""The layout conversions as a tiled Triton transpose against aten's strided copy.

Part 1 times each conversion alone (``triton.testing.do_bench``, median) on real
shapes: BERT-base / BERT-large attention outputs (the ``heads_to_feature_major`` copy
that a feature-major BERT runs once per layer) and row-major activations of BERT and
Llama shapes (``to_feature_major``). Part 2 runs BERT-base feature-major end to end:
one compiled model, captured as a CUDA graph twice, once as compiled (tiled
transposes) and once with its conversion nodes pointed back at the aten route,
replayed in alternating rounds against the dense model in the same process.

    python bench/probe_layout_copies.py            # GPU
    python bench/probe_layout_copies.py --smoke    # tiny BERT on CPU: checks the script
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sparsefx  # noqa: E402
from bench_models import build, first_tensor, graphed, profile_split, time_ms  # noqa: E402
from sparsefx.runtime import layout  # noqa: E402


def aten_to_feature_major(x):
    return x.reshape(-1, x.shape[-1]).t().contiguous()


def aten_from_feature_major(y, like=None, shape=None):
    lead = layout._token_dims(like, shape, default=[y.shape[1]])
    return y.t().reshape(*lead, y.shape[0]).contiguous()


def aten_heads_to_feature_major(a):
    B, H, S, d = a.shape
    return a.permute(1, 3, 0, 2).reshape(H * d, B * S).contiguous()


ATEN = {layout.to_feature_major: aten_to_feature_major,
        layout.from_feature_major: aten_from_feature_major,
        layout.heads_to_feature_major: aten_heads_to_feature_major}


def part1() -> list[str]:
    from triton.testing import do_bench
    rows = ["| conversion | shape | aten µs | tiled µs | aten/tiled | MB moved |",
            "|---|---|---|---|---|---|"]
    for label, (B, S, H, d) in [("BERT-base heads", (32, 128, 12, 64)),
                                ("BERT-large heads", (32, 128, 16, 64)),
                                ("Llama-7B heads", (2, 2048, 32, 128))]:
        # as HF attention makes them: views [B, H, S, d] of row-major [B, S, H, d]
        q, k, v = (torch.randn(B, S, H, d, device="cuda", dtype=torch.float16)
                   .transpose(1, 2) for _ in range(3))
        a = F.scaled_dot_product_attention(q, k, v)
        note = "" if a.transpose(1, 2).is_contiguous() else " (SDPA out not [B,S,H,d])"
        assert torch.equal(layout.heads_to_feature_major(a), aten_heads_to_feature_major(a))
        t_aten = do_bench(lambda: aten_heads_to_feature_major(a)) * 1e3
        t_new = do_bench(lambda: layout.heads_to_feature_major(a)) * 1e3
        rows.append(f"| heads_to_feature_major{note} | {label} {B}×{H}×{S}×{d} | "
                    f"{t_aten:.1f} | {t_new:.1f} | {t_aten / t_new:.2f} | "
                    f"{2 * a.numel() * 2 / 1e6:.1f} |")
    for T, Fdim in [(4096, 768), (4096, 3072), (16384, 4096), (8192, 11008)]:
        x = torch.randn(T, Fdim, device="cuda", dtype=torch.float16)
        assert torch.equal(layout.to_feature_major(x), aten_to_feature_major(x))
        t_aten = do_bench(lambda: aten_to_feature_major(x)) * 1e3
        t_new = do_bench(lambda: layout.to_feature_major(x)) * 1e3
        rows.append(f"| to_feature_major | {T}×{Fdim} | {t_aten:.1f} | {t_new:.1f} | "
                    f"{t_aten / t_new:.2f} | {2 * x.numel() * 2 / 1e6:.1f} |")
    return rows


def point_at_aten(sm) -> int:
    n = 0
    for node in sm.graph.nodes:
        if node.op == "call_function" and node.target in ATEN:
            node.target = ATEN[node.target]
            n += 1
    sm.recompile()
    return n


def part2(args) -> list[str]:
    device, dtype = ("cpu", torch.float32) if args.smoke else ("cuda", torch.float16)
    model, example = build("bert", args.smoke)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.bias is not None:
            torch.nn.init.normal_(module.bias, 0.0, 0.5)
    model = model.to(device, dtype)
    inputs = tuple(t.to(device) for t in example)
    G = 16 if args.smoke else 128
    with torch.no_grad():
        sm = sparsefx.compile(model, inputs, G=G, sparsity=0.75, layout="feature_major")
        tiled_out = first_tensor(sm(*inputs)).clone()
        tiled, ok1 = graphed(sm, inputs, device)
        kernels_tiled: dict = {}
        profile_split(lambda: sm(*inputs), device, kernels_tiled)
        swapped = point_at_aten(sm)
        same = torch.equal(first_tensor(sm(*inputs)), tiled_out)
        aten, ok2 = graphed(sm, inputs, device)
        kernels_aten: dict = {}
        profile_split(lambda: sm(*inputs), device, kernels_aten)
        dense, ok3 = graphed(model, inputs, device)
        sides = {"tiled transposes": (tiled, []), "aten copies": (aten, []),
                 "dense": (dense, [])}
        order = list(sides)
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                fn, times = sides[name]
                times.append(time_ms(fn, device, args.iters))
    lines = [f"BERT-base {tuple(example[0].shape)} {dtype}, 75%, G = {G}, feature-major; "
             f"{swapped} conversion nodes; outputs equal: {same}; graphs: {ok1 and ok2 and ok3}",
             "", "| side | ms (rounds) | dense/side |", "|---|---|---|"]
    dense_ms = statistics.median(sides["dense"][1])
    for name, (_, times) in sides.items():
        ms = statistics.median(times)
        lines.append(f"| {name} | **{ms:.3f}** ({', '.join(f'{t:.3f}' for t in times)}) | "
                     f"{dense_ms / ms:.2f} |")
    names = sorted(set(kernels_tiled) | set(kernels_aten),
                   key=lambda k: -abs(kernels_tiled.get(k, 0) - kernels_aten.get(k, 0)))
    lines += ["", "| kernel (one eager forward) | tiled ms | aten ms |", "|---|---|---|"]
    for k in names[:6]:
        lines.append(f"| `{k[:70]}` | {kernels_tiled.get(k, 0):.3f} | "
                     f"{kernels_aten.get(k, 0):.3f} |")
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.iters, args.rounds = 2, 2
    else:
        print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
        print("\n".join(part1()) + "\n", flush=True)
    print("\n".join(part2(args)), flush=True)
