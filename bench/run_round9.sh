#!/usr/bin/env bash
# Round 9 device call: the sm90 pair kernel (CTA pairs sharing each weight block by TMA
# multicast, csrc/tile_linear_sm90.cu). Its GPU tests (RUN_TESTS=0 skips them), then
# bench/profile_tile.py on the large shapes: dense cuBLAS, the cooperative kernel
# (128x256) and the pair kernel (128x512) at 75% and 90% (even, and uneven at 75%), and
# pair-kernel builds with other ring depths passed as VARIANTS="a.so b.so" (built with
# -DSFX_PAIR_X_STAGES / -DSFX_PAIR_W_STAGES). Logs under $OUT.
source bench/device_setup.sh
if [ "${RUN_TESTS:-1}" = 1 ]; then
  timeout ${TEST_TIMEOUT:-300} python -m pytest -q -x -m cuda tests/gpu/test_sm90_tile.py \
    2>&1 | tail -5 | tee "$OUT/tests.log"
fi
prof() { timeout 90 python bench/profile_tile.py --time --graph "$@"; }
for mkn in ${SHAPES:-16384,4096,4096 8192,4096,11008}; do
  prof --impl dense --mkn "$mkn"
  for case in "0.75" "0.9" "0.75 --uneven"; do
    for blk in 128x256 128x512; do
      prof --impl sm90 --block $blk --mkn "$mkn" --sparsity $case
    done
    for lib in ${VARIANTS:-}; do
      prof --impl sm90 --block 128x512 --lib "$lib" --mkn "$mkn" --sparsity $case
    done
  done
done 2>&1 | grep -E "TIME|GRAPH|rel err|Error|error" | tee "$OUT/times.log"
