#!/usr/bin/env bash
# Round 23, call 1: the sm90 kernel's [128, 384] cooperative items (bench/NOTES_tile.md
# round 23). GPU tests of the 384-token items, bench/probe_block384.py (each block shape
# against dense, alternating graph rounds), then ncu's L2 bytes of one launch of the
# 256- and 384-token kernels at 16384x4096->4096, 75%. Call 2: bench/run_round23b.sh.
source bench/device_setup.sh
python -m sparsefx.runtime.cuda.prebuild 2>&1 | tail -4 | tee "$OUT/prebuild.log"
timeout 150 python -m pytest -q -rfE -p no:cacheprovider -m cuda -k 384 \
  tests/gpu/test_sm90_tile.py tests/gpu/test_eager_fastpath.py > "$OUT/tests384.log" 2>&1
tail -6 "$OUT/tests384.log"
timeout "${BENCH_S:-220}" python bench/probe_block384.py --shapes large,bert \
  2>&1 | grep -v "^USDT" | tee "$OUT/probe_block384.md" | tail -40
METRICS=lts__t_bytes.sum,lts__throughput.avg.pct_of_peak_sustained_elapsed,\
dram__bytes_read.sum,gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed
for bm in 256 384; do
  timeout 70 ncu --clock-control none --profile-from-start off --metrics $METRICS \
    --csv python bench/profile_tile.py --impl sm90 --block 128x$bm --mkn 16384,4096,4096 \
    --sparsity 0.75 --profile > "$OUT/ncu_$bm.csv" 2>&1
  echo "== 128x$bm rc=$?"; grep -E "lts__|dram__|gpu__|sm__|rel err" "$OUT/ncu_$bm.csv"
done
