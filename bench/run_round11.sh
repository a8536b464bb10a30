#!/usr/bin/env bash
# Round 11, first device call: the mixed-width probe (bench/probe_mixed_width.py) on the
# uneven BERT cases. Logs under $OUT.
source bench/device_setup.sh
timeout 300 python bench/probe_mixed_width.py 2>&1 | tee "$OUT/probe_mixed.log" | grep "^|\|^#\|Error\|error"
