#!/usr/bin/env bash
# Round 9 device call (the recorded one): the whole GPU test suite (RUN_TESTS=0 skips
# it), bench_dense_fm (every way to run the feature-major dense product, now with
# cuBLAS's bare product plus a Triton bias pass), then bench_tile's 0% feature-major
# rows, where kernel choice times that fourth dense variant. Logs under $OUT.
source bench/device_setup.sh
if [ "${RUN_TESTS:-1}" = 1 ]; then
  timeout ${TEST_TIMEOUT:-400} python -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 \
    | tail -5 | tee "$OUT/tests_all.log"
fi
timeout ${DENSE_TIMEOUT:-150} python bench/bench_dense_fm.py 2>&1 | tee "$OUT/dense_fm.log" \
  | grep "^|\|^#"
timeout ${BENCH_TIMEOUT:-240} python bench/bench_tile.py --shapes bert,large,small --G 128 \
  --sparsity 0 --row-major '' 2>&1 | tee "$OUT/bench_tile.log" | grep "^|\|^#"
