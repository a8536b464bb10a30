#!/usr/bin/env bash
# Round 15, table call: the CUTLASS dense variants at the BERT shapes once more
# (bench/probe_dense_sm90.py), then bench_tile's full G = 128 table with kernel choice
# timing them (KERNEL_VERSION tile-triton-v13). Logs under $OUT.
source bench/device_setup.sh
timeout 300 python -m sparsefx.runtime.cuda.prebuild 2>&1 | tee "$OUT/prebuild.log"
timeout 150 python bench/probe_dense_sm90.py --rounds 3 --shapes bert 2>&1 \
  | tee "$OUT/probe_dense_sm90.log" | grep -v "Warn\|^check"
timeout ${BENCH_TIMEOUT:-400} python bench/bench_tile.py --shapes large,bert,small --G 128 \
  --sparsity 0,0.5,0.75,0.9 --row-major 0,0.75 2>&1 | tee "$OUT/bench_tile.log" \
  | grep "^|\|^#"
true
