#!/usr/bin/env bash
# Round 11 (ninth session): the closing bench_tile table (RESULTS run 11), in parts that
# each fit one device call: SHAPES (bench_tile --shapes), GS (--G), RM (--row-major).
# The whole GPU suite ran in the call before (bench/run_round8_tests.sh). Uses the
# carried prebuilt sm90 library. Logs under $OUT.
source bench/device_setup.sh
timeout ${BENCH_TIMEOUT:-570} python bench/bench_tile.py --shapes "${SHAPES:-bert,small}" \
  --G "${GS:-64,128}" --sparsity 0,0.5,0.75,0.9 --row-major "${RM-0,0.75}" 2>&1 \
  | tee "$OUT/bench_tile.log" | grep "^|\|^#"
