#!/usr/bin/env bash
# Round 12: does bench_tile's graph timing of a path depend on the path timed before it
# (bench/probe_clocks.py --shadow)? Logs under $OUT.
source bench/device_setup.sh
timeout 400 python bench/probe_clocks.py --shadow 2>&1 | tee "$OUT/probe_shadow.log" \
  | grep "^|\|^#\|Error"
