# Sourced by the bench/run_*.sh device scripts: strict pipes, repository imports, a
# kernel-choice cache outside the tree, $OUT for logs, the carried prebuilt sm90
# libraries when there are some (bench/install_prebuilt_sm90.py), and the GPU's name,
# driver and clock in $OUT/gpu.txt.
set -o pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 SPARSEFX_CACHE_DIR=/tmp/sfx_cache
OUT=${OUT:-/tmp/sfx_out}; mkdir -p "$OUT"
[ -f .gl/exp/sm90_full.so ] && python bench/install_prebuilt_sm90.py .gl/exp/sm90_full.so
# the CUTLASS headers (nvidia-cutlass wheel, carried: no index on the device) and the
# dense_fm_sm90 library built here from them
ls .gl/wheels/nvidia_cutlass-*.whl >/dev/null 2>&1 && \
  python -m pip install -q --no-deps --no-index --root-user-action=ignore .gl/wheels/nvidia_cutlass-*.whl
[ -f .gl/exp/dense_fm.so ] && python bench/install_prebuilt_sm90.py .gl/exp/dense_fm.so dense_fm_sm90
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
