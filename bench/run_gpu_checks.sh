#!/usr/bin/env bash
# One device call: the GPU test-suite, then the end-to-end model benchmark.
# Usage (on the GPU machine, repo root): bash bench/run_gpu_checks.sh "bert vit"
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
models=${1:-"bert vit llama"}
tests=${2:-yes}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
if [ "$tests" = yes ]; then
  timeout 240 python3 -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.log" | tail -15
fi
timeout 420 python3 bench/bench_models.py --models $models 2>&1 | tee "$OUT/bench_models.log" | tail -40
