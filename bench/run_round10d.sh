#!/usr/bin/env bash
# Round 10, fourth device call: the whole GPU suite (RUN_TESTS=0 skips it), then the
# M = 16 split-K sweep (bench/probe_split.py) and bench_tile's M = 16 rows with the
# split-K candidates in kernel choice (RESULTS run 10). Logs under $OUT.
source bench/device_setup.sh
if [ "${RUN_TESTS:-1}" = 1 ]; then
  timeout ${TEST_TIMEOUT:-420} python -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 \
    | tail -8 | tee "$OUT/tests_all.log"
fi
timeout 100 python bench/probe_split.py --shapes small --sparsity 0.75,0.9 2>&1 \
  | tee "$OUT/probe_small.log" | grep "^##"
timeout 150 python bench/bench_tile.py --shapes small --G 64,128 --candidates 2>&1 \
  | tee "$OUT/bench_small.log" | grep "^|\|^#"
