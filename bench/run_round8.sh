#!/usr/bin/env bash
# Round 8 device call: the dense feature-major Triton kernel (runtime/cuda/triton_dense.py).
# Its GPU tests and the dense-variant tests, bench_dense_fm (every way to run the
# feature-major dense product, cuBLAS / cuBLASLt / Triton configs, against row-major
# F.linear), then bench_tile's 0% feature-major rows, where kernel choice now also
# times the Triton dense variants. Logs under $OUT.
source bench/device_setup.sh
if [ "${RUN_TESTS:-1}" = 1 ]; then      # RUN_TESTS=0: the benchmarks only
  timeout ${TEST_TIMEOUT:-150} python -m pytest -q -m cuda tests/gpu/test_tile_kernels.py \
    -k "dense or decision" 2>&1 | tail -5 | tee "$OUT/tests.log"
fi
timeout ${DENSE_TIMEOUT:-150} python bench/bench_dense_fm.py 2>&1 | tee "$OUT/dense_fm.log"
timeout ${BENCH_TIMEOUT:-240} python bench/bench_tile.py --shapes bert,large,small --G 128 \
  --sparsity 0 --row-major '' 2>&1 | tee "$OUT/bench_tile.log" | grep "^|\|^#"
