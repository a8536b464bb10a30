#!/usr/bin/env bash
# One device call for the recorded end-to-end table (bench/RESULTS.md): BERT-base at 0%
# (the rewrites alone: every GEMM dense) and 75%, ViT-B/16 at 75%, the Llama MLP stack
# at 75% and 90%, row_major. SPARSEFX_CACHE_DIR may hold earlier kernel decisions.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export SPARSEFX_CACHE_DIR=${SPARSEFX_CACHE_DIR:-$OUT/cache}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
run() { timeout ${BENCH_TIMEOUT:-300} python3 bench/bench_models.py "$@" --kernels 8 --layouts row_major \
        --compile-sparsities -1 2>&1 | grep -v "USDT\|Warning\|warn" \
        | tee -a "$OUT/bench_models.log" | grep "^| [a-z]\|^  "; }
run --models bert --sparsities 0 0.75
run --models vit --sparsities 0.75
run --models llama --sparsities 0.75 0.9
