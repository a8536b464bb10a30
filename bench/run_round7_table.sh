#!/usr/bin/env bash
# The recorded device call of round 7 (RESULTS.md run 7): the GPU tests of the Triton
# tile kernels and the eager path, then bench_tile on the large and BERT shapes, G=128,
# feature-major 0/75/90% (even and uneven), plus the row-major rows at 0/75%. Uses the
# carried prebuilt sm90 library (bench/install_prebuilt_sm90.py). Logs under $OUT.
source bench/device_setup.sh
timeout ${TEST_TIMEOUT:-200} python -m pytest -q -m cuda tests/gpu/test_tile_kernels.py \
  tests/gpu/test_eager_path.py 2>&1 | tail -5 | tee "$OUT/tests.log"
timeout ${BENCH_TIMEOUT:-360} python bench/bench_tile.py --shapes large,bert --G 128 \
  --sparsity 0,0.75,0.9 --row-major 0,0.75 2>&1 | tee "$OUT/bench_tile.log" | grep "^|\|^#"
