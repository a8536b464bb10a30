#!/usr/bin/env bash
# One device call for the eager host-overhead work (round 5): the GPU tests of the
# eager path, the tile kernels, the sm90 kernel and the transpose; the host-cost table
# of bench/profile_host.py at a host-bound and at a BERT-size layer; bench_tile's BERT
# and small-batch rows (eager `sparse` / `chosen` columns carry the host cost). Uses the
# carried prebuilt sm90 library (bench/install_prebuilt_sm90.py). Logs under $OUT.
set -o pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 SPARSEFX_CACHE_DIR=/tmp/sfx_cache
OUT=${OUT:-/tmp/sfx_out}; mkdir -p "$OUT"
[ -f .gl/exp/sm90_full.so ] && python bench/install_prebuilt_sm90.py .gl/exp/sm90_full.so
timeout 240 python -m pytest -q -m cuda -p no:cacheprovider tests/gpu/test_eager_path.py \
  tests/gpu/test_tile_kernels.py tests/gpu/test_sm90_tile.py tests/gpu/test_transpose.py \
  2>&1 | tee "$OUT/tests.log" | tail -n 15
timeout 120 python bench/profile_host.py 2>&1 | tee "$OUT/host_small.log" | grep -v Warn
timeout 120 python bench/profile_host.py --mkn 4096,768,3072 --calls 2000 2>&1 \
  | tee "$OUT/host_bert.log" | grep -v Warn
timeout ${BENCH_TIMEOUT:-200} python bench/bench_tile.py --shapes bert,small --G 128 \
  --sparsity 0,0.75,0.9 --row-major 0,0.75 2>&1 | tee "$OUT/bench_tile.log" | grep "^|"
