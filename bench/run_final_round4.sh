#!/usr/bin/env bash
# The recorded device call of round 4 (bench/RESULTS.md "Run 5"): the whole GPU
# test-suite, the full bench_tile table, bench_sm90 (Triton shortlist vs each sm90
# config) and the Llama MLP stack end to end in the default row-major layout.
set -o pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 SPARSEFX_CACHE_DIR=/tmp/sfx_cache
OUT=${OUT:-/tmp/sfx_out}; mkdir -p "$OUT"
bash bench/run_final_tile.sh 2>&1 | grep -v "^#   " > "$OUT/final_tile.log"
tail -n 3 "$OUT/gpu_tests.log"; grep -c "^| [0-9]" "$OUT/bench_tile.log"
timeout 300 python bench/bench_models.py --models llama --sparsities 0.5 0.75 0.9 \
  --kernels 8 --layouts row_major --compile-sparsities -1 2>&1 | grep -v "USDT\|Warning\|warn" \
  | tee "$OUT/bench_models.log" | grep "^| llama\|^  "
