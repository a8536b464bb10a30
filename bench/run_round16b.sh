#!/usr/bin/env bash
# Round 16, second change: C++ eager records for sparse layers on the sm90 tile kernel.
# The eager C++ path's tests, then the host cost
# (bench/probe_sm90_host.py). Logs under $OUT.
source bench/device_setup.sh
timeout 200 python -m sparsefx.runtime.cuda.prebuild 2>&1 | tee "$OUT/prebuild.log"
timeout ${TEST_TIMEOUT:-400} python -m pytest -q -m cuda -p no:cacheprovider \
  tests/gpu/test_eager_fastpath.py 2>&1 | tee "$OUT/tests.log" | tail -15
timeout 150 python bench/probe_sm90_host.py 2>&1 | tee "$OUT/sm90_host.log" | grep -v Warn
true
