#!/usr/bin/env bash
# Round 13, first device call: the M = 16 split-K sweep with more split counts
# (bench/probe_split.py --small-splits), then the eager host cost per call
# (bench/profile_host.py, with a cProfile of the op's Python path) at a host-bound
# layer and at 4096x768->768. Logs under $OUT.
source bench/device_setup.sh
timeout 200 python bench/probe_split.py --shapes small --sparsity 0.5,0.75,0.9 \
  --small-splits 2,3,4,5,6,8 2>&1 | tee "$OUT/probe_small.log" | grep "^##\|^| 64x16x128\|^| 64x16x64\|^| 32x16x128" | head -150
timeout 120 python bench/profile_host.py --profile 2>&1 | tee "$OUT/host_small.log" \
  | grep -v Warn | head -80
timeout 120 python bench/profile_host.py --mkn 4096,768,768 --calls 2000 2>&1 \
  | tee "$OUT/host_bert.log" | grep -v Warn | head -20
