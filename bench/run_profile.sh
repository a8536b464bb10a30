#!/usr/bin/env bash
# One device call: ncu (stall reasons, memory and tensor-pipe counters) on the sm90 and
# Triton tile kernels and on cuBLAS at one shape, then do_bench times of sm90 variant
# builds (bench/profile_tile.py --lib; built beforehand into .gl/exp/, carried).
# Usage (device): bash bench/run_profile.sh   (logs and reports under $OUT)
set -o pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 SPARSEFX_CACHE_DIR=/tmp/sfx_cache
OUT=${OUT:-/tmp/sfx_out}; mkdir -p "$OUT"
SHAPE=${SHAPE:-16384,4096,4096}; SP=${SP:-0.75}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/times.log"
SECTIONS="--section SpeedOfLight --section WarpStateStats --section SchedulerStats \
 --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section SourceCounters \
 --section LaunchStats --section Occupancy"
prof() {  # name, profile_tile args...
  local name=$1; shift
  timeout 150 ncu --clock-control none --profile-from-start off $SECTIONS -f -o /tmp/$name \
    python bench/profile_tile.py --mkn $SHAPE --sparsity $SP --profile "$@" > /tmp/$name.log 2>&1
  echo "== $name rc=$? $*" >> "$OUT/details.txt"
  tail -n 3 /tmp/$name.log >> "$OUT/details.txt"
  ncu -i /tmp/$name.ncu-rep --page details >> "$OUT/details.txt" 2>&1
  ncu -i /tmp/$name.ncu-rep --page source --csv --print-source sass > "$OUT/${name}_sass.csv" 2>&1
}
for v in ${VARIANTS:-base nofence nogather nomma}; do
  for b in ${BLOCKS:-128x256 128x128}; do
    timeout 60 python bench/profile_tile.py --impl sm90 --block $b --lib .gl/exp/sm90_$v.so \
      --mkn $SHAPE --sparsity $SP --time 2>&1 | grep TIME | sed "s/^/$v /" | tee -a "$OUT/times.log"
  done
done
timeout 90 python bench/profile_tile.py --impl triton --mkn $SHAPE --sparsity $SP --time 2>&1 | tail -2 | tee -a "$OUT/times.log"
timeout 60 python bench/profile_tile.py --impl dense --mkn $SHAPE --sparsity $SP --time 2>&1 | tail -1 | tee -a "$OUT/times.log"
[ "${SKIP_NCU:-0}" = 1 ] && exit 0
prof sm90 --impl sm90 --block 128x256 --lib .gl/exp/sm90_base.so
prof triton --impl triton
prof dense --impl dense
grep -E "^== |Duration|Warp Cycles Per Issued|Compute \(SM\) Throughput|Memory Throughput|L2 Hit|Issue Slots Busy|No Eligible" "$OUT/details.txt" | tee "$OUT/summary.txt"
