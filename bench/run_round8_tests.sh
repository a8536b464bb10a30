#!/usr/bin/env bash
# Round 8: the whole GPU test suite (marker `cuda`) on the tree, with the carried
# prebuilt sm90 library (bench/device_setup.sh). Log under $OUT.
source bench/device_setup.sh
timeout ${TEST_TIMEOUT:-540} python -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 \
  | tail -15 | tee "$OUT/tests_all.log"
