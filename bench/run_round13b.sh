#!/usr/bin/env bash
# Round 13, second device call: the eager replay of a layer's launch
# (dispatch._EagerRunner). GPU tests of the eager path, PDL chains and the transpose;
# the host cost per call with and without the replay (bench/profile_host.py) at a
# host-bound layer and at 4096x768->768; then bench_tile's BERT and M = 16 rows, whose
# eager columns carry the host cost. Logs under $OUT.
source bench/device_setup.sh
timeout 240 python -m pytest -q -m cuda -p no:cacheprovider tests/gpu/test_eager_path.py \
  tests/gpu/test_pdl.py tests/gpu/test_transpose.py 2>&1 | tee "$OUT/tests.log" | tail -n 25
timeout 120 python bench/profile_host.py 2>&1 | tee "$OUT/host_small.log" | grep -v Warn
timeout 120 python bench/profile_host.py --mkn 4096,768,768 --calls 2000 2>&1 \
  | tee "$OUT/host_bert.log" | grep -v Warn
timeout ${BENCH_TIMEOUT:-240} python bench/bench_tile.py --shapes bert,small --G 128 \
  --sparsity 0,0.5,0.75,0.9 --row-major 0,0.75 2>&1 | tee "$OUT/bench_tile.log" \
  | grep "^|\|^#"
