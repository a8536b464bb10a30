#!/usr/bin/env bash
# Round 16: C++ eager records for layers on the dense Triton kernel (pointer-load
# configurations). Runs the eager C++ path's tests and the CUTLASS kernel's tests, then
# the host cost per dense variant (bench/probe_dense_host.py). Logs under $OUT.
source bench/device_setup.sh
timeout 300 python -m sparsefx.runtime.cuda.prebuild 2>&1 | tee "$OUT/prebuild.log"
timeout ${TEST_TIMEOUT:-240} python -m pytest -q -m cuda -p no:cacheprovider \
  tests/gpu/test_eager_fastpath.py tests/gpu/test_dense_fm_sm90.py tests/gpu/test_eager_path.py \
  2>&1 | tee "$OUT/tests.log" | tail -15
timeout 150 python bench/probe_dense_host.py 2>&1 | tee "$OUT/dense_host.log" | grep -v Warn
true
