#!/usr/bin/env bash
# Round 10 device call: split-K for the Triton grid kernel. The split-related GPU
# tests first (RUN_TESTS=0 skips them), then bench/probe_split.py's sweep. Logs under
# $OUT.
source bench/device_setup.sh
if [ "${RUN_TESTS:-1}" = 1 ]; then
  timeout ${TEST_TIMEOUT:-300} python -m pytest -q -m cuda ${TESTS:-tests/gpu/test_tile_kernels.py tests/gpu/test_pdl.py} -p no:cacheprovider 2>&1 \
    | tail -15 | tee "$OUT/tests.log"
fi
timeout ${PROBE_TIMEOUT:-300} python bench/probe_split.py ${PROBE_ARGS:-} 2>&1 | tee "$OUT/probe_split.log" | tail -150
