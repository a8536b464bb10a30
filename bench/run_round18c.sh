#!/usr/bin/env bash
# Round 18, call 3 (final code): the sm90 kernel tests, the eager-path tests (whose C++
# records pass the row-segment store mode and out_pos), then the probe again.
source bench/device_setup.sh
python -m sparsefx.runtime.cuda.prebuild 2>&1 | tail -4 | tee "$OUT/prebuild.log"
timeout 430 python -m pytest -q -p no:cacheprovider tests/gpu/test_sm90_tile.py \
  tests/gpu/test_eager_fastpath.py tests/gpu/test_eager_path.py 2>&1 | tail -8 \
  | tee "$OUT/tests.log"
timeout 110 python bench/probe_row_segments.py 2>&1 | tee "$OUT/probe_row_segments.md"
