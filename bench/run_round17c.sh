#!/usr/bin/env bash
# Round 17, the pruned-feature write: its device time against the ATen calls it replaced
# and against the tile kernel (bench/probe_fill_missing.py), the row-major block shapes
# (bench/probe_fill_variants.py), the host cost of such layers on the sm90 kernel
# (bench/probe_sm90_host.py), then the GPU tests that run it.
source bench/device_setup.sh
timeout 300 python -m sparsefx.runtime.cuda.prebuild 2>&1 | tee "$OUT/prebuild.log" | tail -1
timeout 150 python bench/probe_fill_missing.py 2>&1 | tee "$OUT/fill.log" | grep -v Warn
timeout 60 python bench/probe_fill_variants.py 2>&1 | tee "$OUT/fill_variants.log" | grep -v Warn
timeout 100 python bench/probe_sm90_host.py --pruned-features 0.1 2>&1 | \
  tee "$OUT/sm90_host_0.1.log" | grep -v Warn
timeout ${TEST_TIMEOUT:-400} python -m pytest -q -m cuda -p no:cacheprovider \
  tests/gpu/test_eager_fastpath.py tests/gpu/test_eager_path.py tests/gpu/test_tile_kernels.py \
  tests/gpu/test_sm90_tile.py tests/passes/test_choose_kernel.py \
  2>&1 | tee "$OUT/tests.log" | tail -6
true
