#!/usr/bin/env bash
# Round 11, last device call: kernel choice with the warm-up timing on a GPU that has
# just started (the case RESULTS run 11 got wrong: 16384×4096→4096, G = 64, 0%, first
# case of its call), then the other large G = 64 rows at 0/50%, then the choice tests.
# Logs under $OUT.
source bench/device_setup.sh
timeout 300 python bench/bench_tile.py --shapes large --G 64 --sparsity 0,0.5 --row-major "" \
  2>&1 | tee "$OUT/bench_choice.log" | grep "^|\|^#"
timeout 200 python -m pytest -q -m cuda tests/gpu/test_eager_path.py tests/gpu/test_pdl.py \
  -p no:cacheprovider 2>&1 | tail -3
