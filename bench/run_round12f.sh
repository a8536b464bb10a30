#!/usr/bin/env bash
# Round 12, after the review: the grid-kernel and dispatcher GPU tests on the tree with
# the one-helper plain epilogue, and one bench_tile case through bench_tile.random_layer.
# Logs under $OUT.
source bench/device_setup.sh
timeout 400 python -m pytest -q -m cuda tests/gpu/test_tile_kernels.py tests/gpu/test_pdl.py \
  tests/gpu/test_eager_path.py -p no:cacheprovider 2>&1 | tail -3 | tee "$OUT/tests_grid.log"
timeout 120 python bench/bench_tile.py --shapes small --G 128 --sparsity 0.75 --row-major "" \
  2>&1 | tee "$OUT/bench_smoke.log" | grep "^|\|^#\|Error"
