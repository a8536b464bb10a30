#!/usr/bin/env bash
# Round 18 (bench/NOTES_tile.md): the sm90 kernel's row-segment epilogue for row-major
# outputs that bulk stores cannot write. Call 1: build, the sm90 kernel tests, the probe
# against the previous path, the eager-record tests that run the new epilogue.
source bench/device_setup.sh
python -m sparsefx.runtime.cuda.prebuild 2>&1 | tail -4 | tee "$OUT/prebuild.log"
timeout 200 python -m pytest -q -p no:cacheprovider tests/gpu/test_sm90_tile.py 2>&1 \
  | tail -15 | tee "$OUT/test_sm90_tile.log"
timeout 150 python bench/probe_row_segments.py --pruned 0.1 2>&1 | tee "$OUT/probe_row_segments.md"
timeout 200 python -m pytest -q -p no:cacheprovider tests/gpu/test_eager_fastpath.py \
  -k "pruned or sm90 or dense" 2>&1 | tail -15 | tee "$OUT/test_eager.log"
