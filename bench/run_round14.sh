#!/usr/bin/env bash
# Round 14: the eager C++ path of tile_linear (csrc/eager_fastpath.cpp). Builds it
# (prebuild, timed), runs its GPU tests with the other eager-path tests, then the host
# cost per call with and without it (bench/profile_host.py) at a host-bound layer and
# at 4096x768->768. Logs under $OUT.
source bench/device_setup.sh
timeout 300 python -m sparsefx.runtime.cuda.prebuild 2>&1 | tee "$OUT/prebuild.log"
timeout ${TEST_TIMEOUT:-300} python -m pytest -q -x -p no:cacheprovider \
  tests/gpu/test_eager_fastpath.py tests/gpu/test_eager_path.py tests/gpu/test_pdl.py \
  2>&1 | tee "$OUT/tests.log" | tail -25
timeout 120 python bench/profile_host.py 2>&1 | tee "$OUT/host_small.log" | grep -v Warn
timeout 120 python bench/profile_host.py --mkn 4096,768,768 --calls 2000 2>&1 \
  | tee "$OUT/host_bert.log" | grep -v Warn
# bench_tile's BERT and small rows (eager `chosen` column: the op as a user calls it)
[ -n "$WITH_TABLE" ] && timeout ${BENCH_TIMEOUT:-300} python bench/bench_tile.py \
  --shapes bert,small --G 128 --sparsity 0,0.5,0.75,0.9 --row-major 0,0.75 2>&1 \
  | tee "$OUT/bench_tile.log" | grep "^|\|^#"
true
