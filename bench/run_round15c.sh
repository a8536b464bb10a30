#!/usr/bin/env bash
# Round 15, last call: the whole GPU suite (marker `cuda`) with the final dense_fm_sm90
# library, then bench/probe_dense_sm90.py at every bench_tile shape. Logs under $OUT.
source bench/device_setup.sh
timeout 300 python -m sparsefx.runtime.cuda.prebuild 2>&1 | tee "$OUT/prebuild.log"
timeout ${TEST_TIMEOUT:-450} python -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 \
  | tail -15 | tee "$OUT/tests_all.log"
timeout ${PROBE_TIMEOUT:-120} python bench/probe_dense_sm90.py --rounds 3 2>&1 \
  | tee "$OUT/probe_dense_sm90.log" | grep -v "Warn"
true
