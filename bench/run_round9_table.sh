#!/usr/bin/env bash
# The recorded device call of round 9 (RESULTS.md run 9b): bench_tile on the large, BERT
# and small shapes, G=128, feature-major 0/75/90% (even and uneven), plus the
# row-major rows at 0/75%. The GPU tests of the same tree ran in the call before
# (bench/run_round8_tests.sh: the whole suite). Uses the carried prebuilt sm90 library. Logs under $OUT.
source bench/device_setup.sh
timeout ${BENCH_TIMEOUT:-560} python bench/bench_tile.py --shapes large,bert,small --G 128 \
  --sparsity 0,0.75,0.9 --row-major 0,0.75 2>&1 | tee "$OUT/bench_tile.log" | grep "^|\|^#"
