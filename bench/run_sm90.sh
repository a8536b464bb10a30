#!/usr/bin/env bash
# One device call: build the sm90 library, a smoke run (one launch per case, so a hang
# names its case), its GPU tests (and the Triton kernel tests that now include sm90
# candidates), then the benchmark. Logs under $OUT.
# Usage (device): [TEST_TIMEOUT=s] [BENCH_TIMEOUT=s] bash bench/run_sm90.sh [bench args]
set -o pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
export SPARSEFX_CACHE_DIR=/tmp/sfx_cache
OUT=${OUT:-/tmp/sfx_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python - <<'PY' 2>&1 | tee "$OUT/build.log"
import time; t = time.time()
from sparsefx.runtime.cuda import sm90_tile
print("sm90 available:", sm90_tile.available(), sm90_tile.why_not(), f"{time.time() - t:.1f}s")
PY
timeout ${SMOKE_TIMEOUT:-60} python bench/bench_sm90.py --smoke 2>&1 | tee "$OUT/smoke.log"
[ "${SKIP_TESTS:-0}" = 1 ] || timeout ${TEST_TIMEOUT:-120} python -m pytest -q -m cuda --maxfail=10 --durations=5 tests/gpu/test_sm90_tile.py 2>&1 | tee "$OUT/test_sm90.log" | tail -n 40
[ "${SKIP_TESTS:-0}" = 1 ] || [ "${SKIP_TILE_TESTS:-0}" = 1 ] || timeout ${TILE_TIMEOUT:-60} python -m pytest -q -x -m cuda tests/gpu/test_tile_kernels.py -k "every_candidate" 2>&1 | tee "$OUT/test_tile.log" | tail -n 8
timeout ${BENCH_TIMEOUT:-240} python bench/bench_sm90.py "$@" 2>&1 | tee "$OUT/bench.log"
