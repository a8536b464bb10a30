#!/usr/bin/env bash
# One device call for round 4 of the sm90 kernel (bench/NOTES_tile.md): install the
# library built on the developer machine (.gl/exp/sm90_full.so, carried) under the cache
# name this machine's build.load expects (saves the ~60 s nvcc run; the file is the same
# source and flags), run the sm90 GPU tests, time the shipped kernel and diagnosis builds
# (.gl/exp/sm90_<variant>.so, see SFX_DIAG_* in the .cu) at 16384x4096->4096, then the
# bench_sm90 table and one ncu profile. Logs under $OUT.
set -o pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 SPARSEFX_CACHE_DIR=/tmp/sfx_cache
OUT=${OUT:-/tmp/sfx_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/run.log"
[ -f .gl/exp/sm90_full.so ] && python bench/install_prebuilt_sm90.py .gl/exp/sm90_full.so 2>&1 | tee -a "$OUT/run.log"
timeout ${TEST_TIMEOUT:-150} python -m pytest -q -m cuda --maxfail=5 tests/gpu/test_sm90_tile.py 2>&1 | tail -n 15 | tee -a "$OUT/run.log"
for sp in ${SPS:-0.75 0.9 0}; do
  for v in "--block 128x256" "--block 128x256 --direct-store" "--block 128x128" \
           "--block 128x256 --lib .gl/exp/sm90_now.so"; do
    timeout 60 python bench/profile_tile.py --impl sm90 $v \
      --sparsity $sp --time 2>&1 | grep -E "TIME|rel err|Error" | sed "s/{.*}//" | tee -a "$OUT/run.log"
  done
done
[ "${SKIP_BENCH:-0}" = 1 ] || \
timeout ${BENCH_TIMEOUT:-300} python bench/bench_sm90.py 2>&1 | tee "$OUT/bench.log" | grep -v "^|" | tail -n 3
grep "^|" "$OUT/bench.log" | tee -a "$OUT/run.log"
[ "${SKIP_NCU:-0}" = 1 ] && exit 0
timeout 150 ncu --clock-control none --profile-from-start off --section SpeedOfLight \
  --section WarpStateStats --section SchedulerStats --section SourceCounters -f -o /tmp/pp \
  python bench/profile_tile.py --impl sm90 --block ${NCU_BLOCK:-128x128} --profile > /tmp/pp.log 2>&1
ncu -i /tmp/pp.ncu-rep --page details > "$OUT/ncu_details.txt" 2>&1
ncu -i /tmp/pp.ncu-rep --page source --csv --print-source sass > "$OUT/ncu_sass.csv" 2>&1
grep -E "Duration|Warp Cycles Per Issued|Compute \(SM\) Throughput|No Eligible" "$OUT/ncu_details.txt"
