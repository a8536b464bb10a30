#!/usr/bin/env bash
# The recorded device call of round 5 (eager host path, two-pass kernel choice):
# host-cost table (bench/profile_host.py) at a host-bound and a BERT-size layer, then
# bench_tile on the large and BERT shapes, G=128, feature-major, 0/75/90%, plus the
# row-major rows at 0/75%. Uses the carried prebuilt sm90 library. Logs under $OUT.
source bench/device_setup.sh
timeout 90 python bench/profile_host.py 2>&1 | grep -v Warn | tee "$OUT/host_small.log"
timeout 90 python bench/profile_host.py --mkn 4096,768,3072 --calls 2000 2>&1 \
  | grep -v Warn | tee "$OUT/host_bert.log"
timeout ${BENCH_TIMEOUT:-400} python bench/bench_tile.py --shapes large,bert --G 128 \
  --sparsity 0,0.75,0.9 --row-major 0,0.75 2>&1 | tee "$OUT/bench_tile.log" | grep "^|\|^#"
