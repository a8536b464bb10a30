#!/usr/bin/env bash
# Round 23, one call: the sm90 kernel's [128, 384] cooperative items. GPU tests of every
# block shape (384 first), the layout tests of last session's review fix, then
# bench/probe_block384.py (each block shape against dense, alternating rounds).
source bench/device_setup.sh
python -m sparsefx.runtime.cuda.prebuild 2>&1 | tail -4 | tee "$OUT/prebuild.log"
timeout 150 python -m pytest -q -rfE -p no:cacheprovider -m cuda -k 384 \
  tests/gpu/test_sm90_tile.py tests/gpu/test_eager_fastpath.py > "$OUT/tests384.log" 2>&1
tail -6 "$OUT/tests384.log"
timeout "${BENCH_S:-240}" python bench/probe_block384.py --shapes large,bert \
  2>&1 | grep -v "^USDT" | tee "$OUT/probe_block384.md" | tail -40
timeout "${TEST_S:-120}" python -m pytest -q -rfE -p no:cacheprovider -m cuda -k "not 384" \
  tests/gpu/test_sm90_tile.py tests/runtime/test_layout.py tests/gpu/test_transpose.py \
  > "$OUT/tests_rest.log" 2>&1
tail -6 "$OUT/tests_rest.log"
