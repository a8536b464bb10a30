#!/usr/bin/env bash
# The tuning call of round 6 (bench/NOTES_tile.md; run at commits 3e10c1f and 4d41a7f
# for the tries there): the Triton kernel GPU tests, then bench_tile with every candidate's
# time on the BERT and small-batch shapes (75/90%, even and uneven tiles) and the
# large shapes at 75%. Uses the carried prebuilt sm90 library. Logs under $OUT.
source bench/device_setup.sh
timeout ${TEST_TIMEOUT:-300} python -m pytest -q -m cuda tests/gpu/test_tile_kernels.py \
  2>&1 | tail -15 | tee "$OUT/tests.log"
timeout ${BERT_TIMEOUT:-200} python bench/bench_tile.py --shapes bert,small --G 128 \
  --sparsity 0.75,0.9 --row-major "" --candidates 2>&1 | tee "$OUT/bench_bert.log" \
  | grep "^|\|^#"
timeout ${LARGE_TIMEOUT:-150} python bench/bench_tile.py --shapes large --G 128 \
  --sparsity 0.75 --row-major "" --candidates 2>&1 | tee "$OUT/bench_large.log" \
  | grep "^|\|^#"
