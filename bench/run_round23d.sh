#!/usr/bin/env bash
# Round 23, call 2: leave-one-out builds of the 256- and 384-token kernels
# (bench/probe_sm90_variants.py with the fp16 variant libraries in .gl/diag, built from
# this source with -DSFX_DIAG_<X>=1 -DSFX_DIAG_FP16_ONLY=1), then the rest of the GPU tests
# and bench_tile's large shapes with the 384-token items among the candidates.
source bench/device_setup.sh
libs=""; for f in .gl/diag/*.so; do n=$(basename "$f" .so); libs="$libs --lib $n=$f"; done
timeout 120 python bench/probe_sm90_variants.py $libs 2>&1 | grep -v "^USDT" \
  | tee "$OUT/probe_variants.md" | tail -12
timeout "${TEST_S:-200}" python -m pytest -q -rfE -p no:cacheprovider -m cuda -k "not 384" \
  tests/gpu/test_sm90_tile.py tests/gpu/test_eager_fastpath.py tests/runtime/test_layout.py \
  tests/gpu/test_transpose.py tests/passes/test_choose_kernel.py > "$OUT/tests_rest.log" 2>&1
tail -8 "$OUT/tests_rest.log"
timeout "${BENCH_S:-230}" python bench/bench_tile.py --shapes large --G 128 \
  --sparsity 0,0.5,0.75,0.9 --row-major 0,0.75 2>&1 | grep -v "^USDT" \
  | tee "$OUT/bench_tile_large.md" | tail -30
