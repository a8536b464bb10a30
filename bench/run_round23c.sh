#!/usr/bin/env bash
# Round 23, call 2: with the 384-token items among kernel choice's candidates (M >= 8192):
# the rest of the sm90 / eager-path GPU tests, the layout tests, the candidate-list test,
# then bench_tile's large shapes at G = 128 (both layouts).
source bench/device_setup.sh
timeout "${TEST_S:-230}" python -m pytest -q -rfE -p no:cacheprovider -m cuda -k "not 384" \
  tests/gpu/test_sm90_tile.py tests/gpu/test_eager_fastpath.py tests/runtime/test_layout.py \
  tests/gpu/test_transpose.py tests/passes/test_choose_kernel.py > "$OUT/tests_rest.log" 2>&1
tail -8 "$OUT/tests_rest.log"
timeout "${BENCH_S:-300}" python bench/bench_tile.py --shapes large --G 128 \
  --sparsity 0,0.5,0.75,0.9 --row-major 0,0.75 2>&1 | grep -v "^USDT" \
  | tee "$OUT/bench_tile_large.md" | tail -30
