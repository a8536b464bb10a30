#!/usr/bin/env bash
# Round 17: the full issue-3 table on the runtime with C++ eager records for sm90 tile
# layers (aa098eb) and the review refactor (d469146). bench_tile's eager column is the
# first to go through those records. Logs under $OUT.
source bench/device_setup.sh
git rev-parse HEAD 2>/dev/null | tee "$OUT/commit.txt"
timeout 300 python -m sparsefx.runtime.cuda.prebuild 2>&1 | tee "$OUT/prebuild.log" | tail -3
timeout ${TILE_TIMEOUT:-420} python bench/bench_tile.py --shapes large,bert,small --G 128,64 \
  --sparsity 0,0.5,0.75,0.9 --row-major 0,0.75 2>&1 | tee "$OUT/bench_tile.log" | grep -v "^#   " | tail -n 120
true
