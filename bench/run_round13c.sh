#!/usr/bin/env bash
# Round 13, RESULTS run 13: the host cost per call with and without the eager replay
# (bench/profile_host.py) at a host-bound layer and at 4096x768->768, then the full
# bench_tile table at G = 128 (all six shapes, 0/50/75/90%, even and uneven, plus the
# row-major rows). Logs under $OUT.
source bench/device_setup.sh
timeout 120 python bench/profile_host.py 2>&1 | tee "$OUT/host_small.log" | grep -v Warn
timeout 120 python bench/profile_host.py --mkn 4096,768,768 --calls 2000 2>&1 \
  | tee "$OUT/host_bert.log" | grep -v Warn
timeout ${BENCH_TIMEOUT:-400} python bench/bench_tile.py --shapes large,bert,small --G 128 \
  --sparsity 0,0.5,0.75,0.9 --row-major 0,0.75 2>&1 | tee "$OUT/bench_tile.log" \
  | grep "^|\|^#"
