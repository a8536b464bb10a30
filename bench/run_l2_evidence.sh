#!/usr/bin/env bash
# One device call: what bounds the sm90 tile kernel on the large shape. ncu (Speed Of
# Light + memory workload + L2/DRAM byte counters) on one launch of the cooperative sm90
# kernel at 75% and 90% and of cuBLAS (F.linear) at 16384x4096->4096, fp16, G=128, with
# do_bench times of the same three. Uses the carried prebuilt sm90 library
# (bench/install_prebuilt_sm90.py). Logs under $OUT; summary in $OUT/l2_summary.txt.
set -o pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 SPARSEFX_CACHE_DIR=/tmp/sfx_cache
OUT=${OUT:-/tmp/sfx_out}; mkdir -p "$OUT"
[ -f .gl/exp/sm90_full.so ] && python bench/install_prebuilt_sm90.py .gl/exp/sm90_full.so
SHAPE=${SHAPE:-16384,4096,4096}
METRICS=lts__t_bytes.sum,lts__t_bytes.sum.per_second,lts__t_sectors_srcunit_tex_op_read.sum,\
lts__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,dram__bytes_write.sum,\
dram__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum
for run in "sm90 0.75" "sm90 0.9" "dense 0.75"; do
  set -- $run
  name=$1_$2
  timeout 60 python bench/profile_tile.py --impl $1 --block 128x256 --mkn $SHAPE \
    --sparsity $2 --time 2>&1 | grep "TIME\|rel err" | tee -a "$OUT/l2_summary.txt"
  timeout 150 ncu --clock-control none --profile-from-start off --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --metrics $METRICS -f -o /tmp/$name \
    python bench/profile_tile.py --impl $1 --block 128x256 --mkn $SHAPE --sparsity $2 \
    --profile > /tmp/$name.log 2>&1
  echo "== $name rc=$?" >> "$OUT/l2_details.txt"
  ncu -i /tmp/$name.ncu-rep --page details >> "$OUT/l2_details.txt" 2>&1
  ncu -i /tmp/$name.ncu-rep --page raw --csv --metrics $METRICS > "$OUT/${name}_raw.csv" 2>&1
done
grep -E "^== |Duration|Memory Throughput|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Compute \(SM\) Throughput|L2 Hit|Mem Busy|Max Bandwidth|lts__|dram__" \
  "$OUT/l2_details.txt" | tee -a "$OUT/l2_summary.txt"
