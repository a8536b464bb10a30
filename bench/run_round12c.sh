#!/usr/bin/env bash
# Round 12, last device call, on the committed tree: the sm90 and eager-path GPU tests,
# then the clock/power probe on both large shapes at 75% and 90% (each path run for 2 s
# after 1.5 s idle: its own steady clock). Logs under $OUT.
source bench/device_setup.sh
timeout 200 python -m pytest -q -m cuda tests/gpu/test_sm90_tile.py tests/gpu/test_eager_path.py \
  -p no:cacheprovider 2>&1 | tail -3 | tee "$OUT/tests_sm90.log"
timeout 240 python bench/probe_clocks.py 2>&1 | tee "$OUT/probe_clocks.log" | grep "^|\|^#\|Error"
