#!/usr/bin/env bash
# One device call: end-to-end BERT/ViT profile with per-kernel tables (diagnosis).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export SPARSEFX_CACHE_DIR=$OUT/cache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
timeout ${BENCH_TIMEOUT:-400} python3 bench/bench_models.py --models ${MODELS:-bert vit} \
  --sparsities ${SPARSITIES:-0.75} --kernels ${KERNELS:-14} ${EXTRA:-} 2>&1 \
  | grep -v USDT | tee "$OUT/bench_models.log" | tail -${TAIL:-150}
