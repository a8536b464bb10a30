#!/usr/bin/env bash
# One device call: the whole GPU test-suite, then the issue-3 kernel tables
# (bench_tile.py: kernel choice over Triton + sm90 candidates vs cuBLAS; bench_sm90.py:
# Triton shortlist vs each sm90 config). If .gl/exp/sm90_full.so was carried (built on
# the developer machine from the same csrc/ and flags), it is installed under the name
# build.load expects, which saves the nvcc run here. Logs under $OUT.
set -o pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 SPARSEFX_CACHE_DIR=/tmp/sfx_cache
OUT=${OUT:-/tmp/sfx_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/run.log"
[ -f .gl/exp/sm90_full.so ] && python bench/install_prebuilt_sm90.py .gl/exp/sm90_full.so 2>&1 | tee -a "$OUT/run.log"
[ "${SKIP_TESTS:-0}" = 1 ] || timeout ${TEST_TIMEOUT:-240} python -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.log" | tail -n 8
timeout ${TILE_TIMEOUT:-300} python bench/bench_tile.py --candidates 2>&1 | tee "$OUT/bench_tile.log" | grep -v "^#   " | tail -n 110
[ "${SKIP_SM90:-0}" = 1 ] || timeout 200 python bench/bench_sm90.py 2>&1 | tee "$OUT/bench_sm90.log" | grep "^|"
