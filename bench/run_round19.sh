#!/usr/bin/env bash
# Round 19, call 1: the epilogue activation's cost, the HEAD kernels (erf GELU, carried
# as .gl/old with their prebuilt sm90 library .gl/exp/sm90_old.so) against this tree's
# (polynomial GELU), in one process each, same machine; then the GPU tests that run
# activations through the sm90 and Triton tile kernels.
source bench/device_setup.sh
python -m sparsefx.runtime.cuda.prebuild 2>&1 | tail -3 | tee "$OUT/prebuild.log"
if [ -d .gl/old ]; then
  (cd .gl/old && PYTHONPATH=. python bench/install_prebuilt_sm90.py ../exp/sm90_old.so &&
   PYTHONPATH=. python ../../bench/probe_activation_cost.py "$@") 2>&1 | tee "$OUT/probe_old.md"
fi
python bench/probe_activation_cost.py "$@" 2>&1 | tee "$OUT/probe_new.md"
timeout 300 python -m pytest -q -p no:cacheprovider -m cuda tests/gpu/test_sm90_tile.py \
  tests/gpu/test_tile_kernels.py 2>&1 | tail -8 | tee "$OUT/tests.log"
