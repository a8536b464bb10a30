#!/usr/bin/env bash
# Round 10 diagnosis: where split-K's time goes (bench/probe_split_cost.py), one process
# per variant. Logs under $OUT.
source bench/device_setup.sh
for v in full epilogue store atomic reduce_own; do
  timeout 120 python bench/probe_split_cost.py --variant $v 2>&1 | tee -a "$OUT/split_cost.log" | grep -v Warning
done
