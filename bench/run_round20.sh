#!/usr/bin/env bash
# Round 20, one call (device budget ~6 min): the GPU tests that run the sm90 kernel's
# store variants (Python path, C++ records, PDL chains), then kernel choice between row
# segments and direct stores + fill on row-major layers with pruned features.
source bench/device_setup.sh
python -m sparsefx.runtime.cuda.prebuild 2>&1 | tail -4 | tee "$OUT/prebuild.log"
timeout 75 python -m pytest -q -rfE -p no:cacheprovider -m cuda tests/gpu/test_sm90_tile.py \
  tests/gpu/test_pdl.py tests/gpu/test_eager_fastpath.py \
  -k "direct_stores or row_segments or store_paths or pruned_features or chained or sm90_layers" \
  > "$OUT/tests.log" 2>&1
tail -12 "$OUT/tests.log"
timeout 60 python bench/probe_store_choice.py --shapes "${1:-2,4}" 2>&1 \
  | grep "^|\|^#\|Error" | tee "$OUT/store_choice.md"
