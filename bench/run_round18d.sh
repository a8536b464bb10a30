#!/usr/bin/env bash
# Round 18, call 4 (final code): the other GPU files that run sm90 layers through
# sparse_forward (tile kernels, kernel choice, end to end, capture) and the rest.
source bench/device_setup.sh
python -m sparsefx.runtime.cuda.prebuild 2>&1 | tail -4 | tee "$OUT/prebuild.log"
timeout 520 python -m pytest -q -p no:cacheprovider -m cuda tests \
  --ignore tests/gpu/test_sm90_tile.py --ignore tests/gpu/test_eager_fastpath.py \
  --ignore tests/gpu/test_eager_path.py 2>&1 | tail -8 | tee "$OUT/tests.log"
