#!/usr/bin/env bash
# Round 22, one call: GPU tests of the tiled layout conversions and the transpose kernel,
# the conversions alone and BERT-base feature-major end to end with
# tiled transposes against aten's copies (bench/probe_layout_copies.py).
source bench/device_setup.sh
python -m sparsefx.runtime.cuda.prebuild 2>&1 | tail -4 | tee "$OUT/prebuild.log"
timeout 120 python -m pytest -q -rfE -p no:cacheprovider -m cuda \
  tests/runtime/test_layout.py tests/gpu/test_transpose.py \
  tests/passes/test_fold_pruned_features.py > "$OUT/tests.log" 2>&1
tail -8 "$OUT/tests.log"
timeout "${BENCH_S:-200}" python bench/probe_layout_copies.py 2>&1 | grep -v "^USDT" \
  | tee "$OUT/probe_layout_copies.md" | tail -30
