#!/usr/bin/env bash
# Round 10, third device call: split-K at mid M (bench/probe_split.py on three
# BERT-like shapes with M <= 1024), then bench_tile's M = 16 rows with the split-K
# candidates in kernel choice. Logs under $OUT.
source bench/device_setup.sh
timeout 200 python bench/probe_split.py --shapes '' --sparsity 0.75,0.9 --shape 256x768x768 \
  --shape 512x3072x768 --shape 1024x768x3072 2>&1 | tee "$OUT/probe_mid.log" | grep "^##"
timeout 300 python bench/bench_tile.py --shapes small --G 64,128 --candidates 2>&1 \
  | tee "$OUT/bench_small.log" | grep "^|\|^#"
