#!/usr/bin/env bash
# Round 12, second device call: the sm90 kernel that skips the all-zero 16-row slices
# of an item's last K-step. The carried .gl/exp/sm90_full.so is built from this
# checkout's csrc/, .gl/exp/sm90_old.so from the source before the change. GPU tests of
# the sm90 kernel and the dispatcher on the new library, then the old/new probe
# (bench/probe_tail_slices.py). Logs under $OUT.
source bench/device_setup.sh
timeout 300 python -m pytest -q -m cuda tests/gpu/test_sm90_tile.py tests/gpu/test_eager_path.py \
  -p no:cacheprovider 2>&1 | tail -4 | tee "$OUT/tests_sm90.log"
timeout 240 python bench/probe_tail_slices.py .gl/exp/sm90_old.so .gl/exp/sm90_full.so 2>&1 \
  | tee "$OUT/probe_tail.log" | grep "^|\|Error\|error"
