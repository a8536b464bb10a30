#!/usr/bin/env bash
# One device call: build the CUDA C++ LayerNorm kernel, run its GPU tests and the Triton
# kernel's, then the benchmark. Usage (GPU machine, repo root): bash bench/run_norm_checks.sh
set -u
export PYTHONPATH=. SPARSEFX_CACHE_DIR=/tmp/sfx PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$(date +%s)
python3 -c "from sparsefx.runtime import norm_cuda as c; print('library:', c.load_library(), c.why_not())" 2>&1 | tee "$OUT/build.log"
echo "build+import: $(( $(date +%s) - t0 )) s"
timeout 90 python3 -m pytest -q -rf --tb=short -m cuda -p no:cacheprovider tests/gpu/test_norm_cpp.py tests/gpu/test_norm_kernel.py 2>&1 | tee "$OUT/tests.log" | tail -40
timeout 100 python3 bench/bench_norm.py 2>&1 | tee "$OUT/bench.log"
