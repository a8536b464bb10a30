#!/usr/bin/env bash
# Round 21, one call: the GPU tests of fold_pruned_features and of the compile paths it
# changes, then BERT-base end to end with and without the pass (row-major first).
source bench/device_setup.sh
python -m sparsefx.runtime.cuda.prebuild 2>&1 | tail -4 | tee "$OUT/prebuild.log"
timeout 100 python -m pytest -q -rfE -p no:cacheprovider -m cuda \
  tests/passes/test_fold_pruned_features.py tests/passes/test_choose_kernel.py \
  tests/test_end_to_end.py tests/test_capture.py > "$OUT/tests.log" 2>&1
tail -8 "$OUT/tests.log"
timeout "${BENCH_S:-250}" python bench/bench_fold.py --models "${MODELS:-bert}" \
  --layouts "${LAYOUTS:-row_major,feature_major}" 2>&1 | tee "$OUT/bench_fold.log" \
  | grep -v "^  (CUDA" | tail -30
