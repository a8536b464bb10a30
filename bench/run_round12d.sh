#!/usr/bin/env bash
# Round 12: finer work items for uneven BERT layers (bench/probe_uneven_configs.py).
# Logs under $OUT.
source bench/device_setup.sh
timeout 500 python bench/probe_uneven_configs.py 2>&1 | tee "$OUT/probe_uneven.log" \
  | grep "^|\|Error\|error"
