#!/usr/bin/env bash
# Round 20, one call: the GPU tests of the sm90 kernel (its store variants, the C++
# records, the PDL chains with the sm90 kernel in them), then kernel choice between
# row segments and direct stores + fill on row-major layers with pruned features.
source bench/device_setup.sh
python -m sparsefx.runtime.cuda.prebuild 2>&1 | tail -4 | tee "$OUT/prebuild.log"
timeout 190 python -m pytest -q -rfE -p no:cacheprovider -m cuda tests/gpu/test_sm90_tile.py \
  tests/gpu/test_pdl.py tests/gpu/test_eager_fastpath.py > "$OUT/tests.log" 2>&1
tail -12 "$OUT/tests.log"
timeout 130 python bench/probe_store_choice.py --shapes "${1:-2,3,4,0}" 2>&1 \
  | grep "^|\|^#\|Error" | tee "$OUT/store_choice.md"
