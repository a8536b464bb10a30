#!/usr/bin/env bash
# One device call: what limits the Triton grid tile kernel on the BERT shapes (NOTES
# round 7). For each case: do_bench and CUDA-graph medians, then ncu on one launch with
# the L2 left warm (--cache-control none, as in graph replay) — Speed Of Light, memory
# workload, warp stall reasons, occupancy, pipe utilisation, hottest source lines.
# fp16, G = 128, feature-major, 75%. Logs under $OUT; summary in $OUT/r7_summary.txt.
source bench/device_setup.sh
cp "$OUT/gpu.txt" "$OUT/r7_summary.txt"
METRICS=lts__t_bytes.sum,lts__t_bytes.sum.per_second,lts__t_sector_hit_rate.pct,\
lts__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,dram__bytes_write.sum,\
l1tex__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,\
sm__warps_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum
GRID=128,128,64,8,3,8,0          # the grid kernel kernel choice keeps on the BERT shapes
CASES=(
  "tri_3072_even  triton $GRID 4096,3072,768"
  "tri_3072_uneven triton $GRID 4096,3072,768 --uneven"
  "tri_768_even   triton $GRID 4096,768,768"
  "tri_3072_bm256 triton 128,256,64,8,3,32,0 4096,3072,768"
  "tri_3072_flat1 triton 128,128,64,8,3,8,1 4096,3072,768"
  "dense_3072     dense  - 4096,3072,768"
  "dense_768      dense  - 4096,768,768"
)
for c in "${CASES[@]}"; do
  set -- $c
  name=$1 impl=$2 cfg=$3 mkn=$4; shift 4
  args="--impl $impl --mkn $mkn --sparsity 0.75 $*"
  [ "$cfg" != "-" ] && args="$args --cfg $cfg"
  timeout 90 python bench/profile_tile.py $args --time --graph 2>&1 \
    | grep "TIME\|GRAPH\|rel err\|Error" | sed "s/^/$name: /" | tee -a "$OUT/r7_summary.txt"
  timeout 150 ncu --clock-control none --cache-control none --profile-from-start off \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section Occupancy --section ComputeWorkloadAnalysis --section SchedulerStats \
    --section LaunchStats --section SourceCounters --metrics $METRICS -f -o /tmp/$name \
    python bench/profile_tile.py $args --profile > "$OUT/${name}_ncu.log" 2>&1
  echo "== $name rc=$?" >> "$OUT/r7_details.txt"
  ncu -i /tmp/$name.ncu-rep --page details >> "$OUT/r7_details.txt" 2>&1
  ncu -i /tmp/$name.ncu-rep --page raw --csv > "$OUT/${name}_raw.csv" 2>&1
  cp /tmp/$name.ncu-rep "$OUT/" 2>/dev/null
done
grep -E "^== |Duration|Memory Throughput|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Compute \(SM\) Throughput|L2 Hit|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible|Stall|Theoretical Occupancy" \
  "$OUT/r7_details.txt" >> "$OUT/r7_summary.txt"
