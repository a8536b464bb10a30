"""Benchmark ``sparsefx::tile_linear`` (Triton) against dense cuBLAS in the same run.

For each shape M×K→N, tile width G, sparsity and per-tile density profile:

* dense   = ``F.linear(x[M, K], W, b)`` (cuBLAS, unmasked random W: never zeros);
* sparse  = the best Triton config found by ``dispatch.decide`` for the feature-major
            layer, re-timed; ratio = dense / sparse;
* chosen  = the op through ``torch.ops.sparsefx.tile_linear`` after kernel choice
            (sparse or dense fallback); ratio = dense / chosen;
* graph   = dense and chosen again, each replayed from a CUDA graph (20 calls per
            replay, warm L2; ``dispatch._time_ms``, which kernel choice itself uses): the
            device time without the eager per-call host overhead of the custom op, which
            for µs-size layers exceeds the kernel (models run such layers under graphs).
            Best of ``GRAPH_ROUNDS`` alternating dense / chosen measurements (the clock
            drifts as the GPU heats; alternating gives both the same states).

``uneven`` draws each tile's kept-K uniformly in [0.5, 1.5]× the mean (clipped to
[1, K], rescaled to the same total), as global ranking produces uneven tiles. Times
are ``triton.testing.do_bench`` medians (L2 flushed before every repetition). A
markdown table goes to stdout and to ``$OUT/bench_tile.md`` when ``$OUT`` is set.

    python bench/bench_tile.py                   # everything
    python bench/bench_tile.py --shapes large --G 128
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparsefx.patterns.tile import TileLayout, pack, unpack  # noqa: E402

SHAPES = {
    "bert": [(4096, 768, 768), (4096, 768, 3072), (4096, 3072, 768)],
    "large": [(16384, 4096, 4096), (8192, 4096, 11008)],
    "small": [(16, 4096, 4096)],
}
SPARSITIES = [0.0, 0.5, 0.75, 0.9]
GRAPH_ROUNDS = 3


def kept_counts(T: int, K: int, sparsity: float, uneven: bool, gen) -> torch.Tensor:
    """Kept rows per tile with mean K·(1-sparsity); uneven spreads them ±50%."""
    mean = K * (1.0 - sparsity)
    if not uneven:
        return torch.full((T,), max(1, round(mean)), dtype=torch.int64)
    d = (mean * (0.5 + torch.rand(T, generator=gen))).clamp(1, K)
    d = (d * (mean * T / d.sum())).clamp(1, K)
    counts = d.round().to(torch.int64)
    # fix the rounding residue one row at a time on tiles with room
    residue = int(round(mean * T)) - int(counts.sum())
    step = 1 if residue > 0 else -1
    i = 0
    while residue != 0 and i < 10 * T:
        t = i % T
        if 1 <= counts[t] + step <= K:
            counts[t] += step
            residue -= step
        i += 1
    return counts


def make_layout(N: int, K: int, G: int, counts: torch.Tensor, gen) -> TileLayout:
    T = counts.numel()
    ranks = torch.rand(T, K, generator=gen).argsort(dim=1).argsort(dim=1)
    keep = ranks < counts[:, None]
    return TileLayout(N, K, G, torch.arange(N), keep)


def random_layer(N: int, K: int, G: int, sparsity: float, uneven: bool, gen,
                 dtype=torch.float16):
    """A random TW layer on the GPU: the dense weight ``W`` (random, never zeros), its
    packed form for a layout with :func:`kept_counts` rows per tile, the bias, and the
    kept counts. Returns ``(W, packed, b, counts)``."""
    counts = kept_counts(-(-N // G), K, sparsity, uneven, gen)
    layout = make_layout(N, K, G, counts, gen)
    W = torch.randn(N, K, device="cuda", dtype=dtype) * 0.05
    b = torch.randn(N, device="cuda", dtype=dtype)
    return W, pack(W, layout), b, counts


def bench_ms(fn) -> float:
    from triton.testing import do_bench
    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def run_case(M, K, N, G, sparsity, uneven, feature_major, gen, dtype=torch.float16):
    from sparsefx.runtime.cuda import dispatch
    from sparsefx.runtime.cuda.plan import get_plan
    T = -(-N // G)
    W, packed, b, counts = random_layer(N, K, G, sparsity, uneven, gen, dtype)
    values, row_idx, row_ptr, col_map = (packed.values, packed.row_idx, packed.row_ptr,
                                         packed.col_map)
    x_rm = torch.randn(M, K, device="cuda", dtype=dtype)
    x = x_rm.t().contiguous() if feature_major else x_rm
    args = (x, values, row_idx, row_ptr, col_map, b, N, "none", feature_major)

    dec = dispatch.decide(*args, force=True)
    plan = get_plan(row_ptr, col_map, N, G)
    dense_ms = bench_ms(lambda: F.linear(x_rm, W, b))
    sparse_ms = bench_ms(lambda: dispatch.sparse_forward(*args, plan, dec.config)) \
        if dec.config is not None else float("nan")
    chosen_ms = bench_ms(lambda: torch.ops.sparsefx.tile_linear(*args))
    # the GPU clock drifts with heat (the unmasked dense GEMM throttles it): best of
    # GRAPH_ROUNDS alternating dense / chosen measurements, so both see the same states
    dense_graph_ms = chosen_graph_ms = float("inf")
    for _ in range(GRAPH_ROUNDS):
        dense_graph_ms = min(dense_graph_ms, dispatch._time_ms(lambda: F.linear(x_rm, W, b)))
        chosen_graph_ms = min(chosen_graph_ms, dispatch._time_ms(
            lambda: torch.ops.sparsefx.tile_linear(*args)))
    # correctness of the timed kernel on this very case (fp32 reference)
    out = dispatch.sparse_forward(*args, plan, dec.config).float()
    ref = F.linear(x_rm.float(), unpack(packed).float(), b.float())
    ref = ref.t() if feature_major else ref
    err = float((out - ref).norm() / ref.norm())
    return {"M": M, "K": K, "N": N, "G": G, "sparsity": sparsity,
            "profile": "uneven" if uneven else "even",
            "layout": "fm" if feature_major else "rm",
            "density": float(counts.sum()) / (T * K),
            "dense_us": dense_ms * 1e3, "sparse_us": sparse_ms * 1e3,
            "chosen_us": chosen_ms * 1e3, "ratio": dense_ms / sparse_ms,
            "ratio_chosen": dense_ms / chosen_ms, "choice": dec.choice,
            "dense_variant": dec.dense_variant,
            "dense_graph_us": dense_graph_ms * 1e3, "chosen_graph_us": chosen_graph_ms * 1e3,
            "ratio_graph": dense_graph_ms / chosen_graph_ms,
            "config": None if dec.config is None else dec.config.to_dict(),
            "rel_err": err, "dec_dense_us": (dec.dense_ms or 0) * 1e3,
            "candidates": dec.candidates}


def fmt_cfg(cfg) -> str:
    return (f"{cfg.get('block_n')}x{cfg.get('block_m')}x{cfg.get('block_k')}"
             f"/w{cfg.get('num_warps')}s{cfg.get('num_stages')}g{cfg.get('group_cb')}"
             + ("" if cfg.get("transpose_x", True) else "/direct")
             + (f"/flat{cfg['flat']}" if cfg.get("flat") else "")
             + (f"/split{cfg['split']}" if cfg.get("split") else "")
             + ("/sm90" if cfg.get("impl") == "sm90" else "")) if cfg else "-"


def fmt_choice(r) -> str:
    """"sparse", "dense", or for a feature-major layer's other dense variants
    (dispatch.dense_variants) "dense via rm" (row-major cuBLAS and a transpose),
    "dense mm+bias" (cuBLAS's bare product and a Triton bias pass), "dense sm90" (the
    CUTLASS kernel of runtime/cuda/sm90_dense.py) or "dense triton"
    (the dense Triton kernel)."""
    variant = r.get("dense_variant") or "direct"
    if r["choice"] != "dense" or variant == "direct":
        return r["choice"]
    if variant.startswith("sm90_fm_"):
        return "dense sm90"
    return {"via_row_major": "dense via rm",
            "mm_epilogue": "dense mm+bias"}.get(variant, "dense triton")


def fmt_row(r) -> str:
    cfg_s = fmt_cfg(r["config"] or {})
    return (f"| {r['M']}×{r['K']}→{r['N']} | {r['G']} | {r['layout']} | "
            f"{r['sparsity']:.2f} | {r['profile']} | {r['dense_us']:.1f} | "
            f"{r['sparse_us']:.1f} | {r['ratio']:.2f}× | {r['chosen_us']:.1f} | "
            f"{r['ratio_chosen']:.2f}× ({fmt_choice(r)}) | {r['dense_graph_us']:.1f} | "
            f"{r['chosen_graph_us']:.1f} | {r['ratio_graph']:.2f}× | {cfg_s} | "
            f"{r['rel_err']:.1e} |")


HEADER = ("| M×K→N | G | layout | sparsity | tiles | dense µs | sparse µs | dense/sparse "
          "| chosen µs | dense/chosen | graph: dense µs | graph: chosen µs | graph: dense/chosen "
          "| best config | rel err |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="bert,large,small")
    ap.add_argument("--G", default="64,128")
    ap.add_argument("--sparsity", default=",".join(str(s) for s in SPARSITIES))
    ap.add_argument("--row-major", default="0,0.75",
                    help="sparsities also run row-major (G=128, even); '' for none")
    ap.add_argument("--candidates", action="store_true",
                    help="also print every candidate config's time per case")
    args = ap.parse_args()
    from sparsefx.runtime.cuda import register_cuda_kernels
    assert register_cuda_kernels(), "needs CUDA and triton"
    import triton
    gpu = torch.cuda.get_device_name()
    print(f"# {gpu}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    gen = torch.Generator().manual_seed(0)
    shapes = [s for group in args.shapes.split(",") for s in SHAPES[group]]
    Gs = [int(g) for g in args.G.split(",")]
    sps = [float(s) for s in args.sparsity.split(",")]
    rm_sps = [float(s) for s in args.row_major.split(",") if s]
    cases = [(s, G, sp, un, True) for s in shapes for G in Gs for sp in sps
             for un in ((False,) if sp == 0 else (False, True))]
    cases += [(s, 128, sp, False, False) for s in shapes for sp in rm_sps]
    rows = []
    print(HEADER, flush=True)
    t0 = time.time()
    for (M, K, N), G, sp, un, fm in cases:
        r = run_case(M, K, N, G, sp, un, fm, gen)
        rows.append(r)
        print(fmt_row(r), flush=True)
        if args.candidates:      # every timed config, fastest first (tuning runs)
            ranked = sorted(r["candidates"], key=lambda c: c[1])
            print("#   " + "; ".join(f"{fmt_cfg(c)} {ms * 1e3:.1f}" for c, ms in ranked),
                  flush=True)
        torch.cuda.empty_cache()
    print(f"# {len(rows)} cases in {time.time() - t0:.0f} s")
    out = os.environ.get("OUT")
    if out:
        Path(out, "bench_tile.md").write_text(
            f"GPU: {gpu}, torch {torch.__version__}, triton {triton.__version__}\n\n"
            + HEADER + "\n" + "\n".join(fmt_row(r) for r in rows) + "\n")
        Path(out, "bench_tile.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
