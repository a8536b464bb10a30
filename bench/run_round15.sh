#!/usr/bin/env bash
# Round 15: the CUTLASS dense feature-major GEMM (csrc/dense_fm_sm90.cu). Installs the
# carried nvidia-cutlass wheel and the library built from it elsewhere (device_setup.sh),
# checks every configuration against float64 and times it against row-major F.linear and
# the existing feature-major variants (bench/probe_dense_sm90.py). Logs under $OUT.
source bench/device_setup.sh
timeout 300 python -m sparsefx.runtime.cuda.prebuild 2>&1 | tee "$OUT/prebuild.log"
timeout ${TEST_TIMEOUT:-200} python -m pytest -q -x -p no:cacheprovider \
  tests/gpu/test_dense_fm_sm90.py 2>&1 | tee "$OUT/tests.log" | tail -15
timeout ${PROBE_TIMEOUT:-400} python bench/probe_dense_sm90.py --rounds ${ROUNDS:-3} \
  --shapes ${SHAPES:-all} 2>&1 | tee "$OUT/probe_dense_sm90.log" | grep -v Warn
true
