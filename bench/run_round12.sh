#!/usr/bin/env bash
# Round 12 (tenth session), one device call (also run again after the tail-slice kernel
# change, RESULTS run 12): bench_tile at G = 128 on every shape with
# kernel choice's final rounds (interleaved finalists, median of three;
# KERNEL_VERSION tile-triton-v12), then the clock/power probe of the graph-vs-eager gap
# at 16384×4096→4096 (bench/probe_clocks.py). Logs under $OUT.
source bench/device_setup.sh
timeout ${BENCH_TIMEOUT:-420} python bench/bench_tile.py --shapes "${SHAPES:-large,bert,small}" \
  --G 128 --sparsity 0,0.5,0.75,0.9 --row-major "${RM-0,0.75}" 2>&1 \
  | tee "$OUT/bench_tile.log" | grep "^|\|^#"
timeout 200 python bench/probe_clocks.py 2>&1 | tee "$OUT/probe_clocks.log" \
  | grep "^|\|^#\|Error"
