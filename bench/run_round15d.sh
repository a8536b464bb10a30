#!/usr/bin/env bash
# Round 15, eager call: C++ records for layers on the CUTLASS dense kernel. Runs the eager
# C++ path's tests and the CUTLASS kernel's tests, the host cost per dense variant
# (bench/probe_dense_host.py), then with WITH_TABLE=1 bench_tile's BERT rows (eager
# `chosen` column). Logs under $OUT.
source bench/device_setup.sh
timeout 300 python -m sparsefx.runtime.cuda.prebuild 2>&1 | tee "$OUT/prebuild.log"
timeout ${TEST_TIMEOUT:-240} python -m pytest -q -m cuda -p no:cacheprovider \
  tests/gpu/test_eager_fastpath.py tests/gpu/test_dense_fm_sm90.py tests/gpu/test_eager_path.py \
  2>&1 | tee "$OUT/tests.log" | tail -15
timeout 120 python bench/probe_dense_host.py 2>&1 | tee "$OUT/dense_host.log" | grep -v Warn
[ -n "$WITH_TABLE" ] && timeout ${BENCH_TIMEOUT:-200} python bench/bench_tile.py \
  --shapes bert --G 128 --sparsity 0,0.5 --row-major '' 2>&1 | tee "$OUT/bench_tile.log" \
  | grep "^|\|^#"
true
