#!/usr/bin/env bash
# Round 18, call 2: the row-segment epilogue with the per-item column lookup and four
# rows in flight (shipped build), against the same code with one row at a time
# (.gl/exp/span_u1.so, fp16 only), then its tests.
source bench/device_setup.sh
python -m sparsefx.runtime.cuda.prebuild 2>&1 | tail -4 | tee "$OUT/prebuild.log"
timeout 120 python -m pytest -q -p no:cacheprovider tests/gpu/test_sm90_tile.py \
  -k "row_segments or store_paths or row_major" 2>&1 | tail -5 | tee "$OUT/test_sm90_tile.log"
timeout 150 python bench/probe_row_segments.py 2>&1 | tee "$OUT/probe_row_segments.md"
[ -f .gl/exp/span_u1.so ] && timeout 100 python bench/probe_row_segments.py \
  --lib .gl/exp/span_u1.so 2>&1 | tee "$OUT/probe_row_segments_u1.md"
timeout 180 python -m pytest -q -p no:cacheprovider tests/gpu/test_eager_fastpath.py \
  -k "pruned or sm90" 2>&1 | tail -8 | tee "$OUT/test_eager.log"
