#!/usr/bin/env bash
# Device calls for the recorded end-to-end table (bench/RESULTS.md), row_major, no
# torch.compile of the sparsefx model. Part 1: BERT-base at 0% (no layer pruned, so the
# rewrites without tile ops) and 75%, ViT-B/16 at 75%, the Llama MLP stack at 75% and
# 90%. Part 2: the remaining sparsities. SPARSEFX_CACHE_DIR may hold earlier decisions.
#   bash bench/run_final_models.sh 1|2
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export SPARSEFX_CACHE_DIR=${SPARSEFX_CACHE_DIR:-$OUT/cache}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
run() { timeout ${BENCH_TIMEOUT:-300} python3 bench/bench_models.py "$@" --kernels 8 --layouts row_major \
        --compile-sparsities -1 2>&1 | grep -v "USDT\|Warning\|warn" \
        | tee -a "$OUT/bench_models.log" | grep "^| [a-z]\|^  "; }
if [ "${1:-1}" = 1 ]; then
  run --models bert --sparsities 0 0.75
  run --models vit --sparsities 0.75
  run --models llama --sparsities 0.75 0.9
else
  run --models llama --sparsities 0.5
  run --models vit --sparsities 0.5 0.9
  run --models bert --sparsities 0.5 0.9
fi
