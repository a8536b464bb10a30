#!/usr/bin/env bash
# Round 17, second change: C++ eager records for sparse layers with pruned-away output
# features (the record ends with the Triton launch of runtime/cuda/missing_features.py).
# The eager C++ path's tests and the eager replay's, then the host cost of such layers
# on the sm90 kernel (bench/probe_sm90_host.py, 10% of the features pruned away, and
# none for comparison). Logs under $OUT.
source bench/device_setup.sh
timeout 300 python -m sparsefx.runtime.cuda.prebuild 2>&1 | tee "$OUT/prebuild.log" | tail -2
timeout ${TEST_TIMEOUT:-420} python -m pytest -q -m cuda -p no:cacheprovider \
  tests/gpu/test_eager_fastpath.py tests/gpu/test_eager_path.py \
  2>&1 | tee "$OUT/tests.log" | tail -15
for f in 0.1 0; do
  timeout 100 python bench/probe_sm90_host.py --pruned-features $f 2>&1 | \
    tee "$OUT/sm90_host_$f.log" | grep -v Warn
done
true
