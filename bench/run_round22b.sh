#!/usr/bin/env bash
# Round 22, call 2: the conversions alone with HF's q/k/v strides, then BERT-base
# row-major and feature-major end to end in one process (bench/bench_models.py).
source bench/device_setup.sh
python -m sparsefx.runtime.cuda.prebuild 2>&1 | tail -4 > "$OUT/prebuild.log"
timeout 60 python -c "
import sys; sys.path.insert(0, 'bench')
import probe_layout_copies as p; print('\n'.join(p.part1()))" 2>&1 | tee "$OUT/part1.md"
timeout "${BENCH_S:-300}" python bench/bench_models.py --models bert --sparsities 0.75 \
  --no-compile --layouts row_major feature_major 2>&1 | grep -v "^USDT" \
  | tee "$OUT/bench_models.md" | tail -20
