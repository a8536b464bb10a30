#!/usr/bin/env bash
# One device call for the row-major path: sm90 + transpose + tile-kernel GPU tests, the
# Triton transpose against x.t().contiguous(), the row-major rows of bench_tile (G=128,
# 0/75/90%), then the Llama MLP stack end to end (row-major, the default layout). Uses
# the carried prebuilt library (bench/install_prebuilt_sm90.py). Logs under $OUT.
set -o pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 SPARSEFX_CACHE_DIR=/tmp/sfx_cache
OUT=${OUT:-/tmp/sfx_out}; mkdir -p "$OUT"
[ -f .gl/exp/sm90_full.so ] && python bench/install_prebuilt_sm90.py .gl/exp/sm90_full.so
timeout 200 python -m pytest -x -q -m cuda -p no:cacheprovider tests/gpu/test_sm90_tile.py \
  tests/gpu/test_transpose.py tests/gpu/test_tile_kernels.py 2>&1 | tee "$OUT/tests.log" | tail -n 25
python - <<'PY' 2>&1 | tee -a "$OUT/run.log"
import torch
from sparsefx.runtime.cuda.dispatch import _time_ms
from sparsefx.runtime.cuda.transpose import transpose_2d
for M, K in [(4096, 768), (4096, 3072), (8192, 4096), (16384, 4096)]:
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    a, b = _time_ms(lambda: x.t().contiguous()) * 1e3, _time_ms(lambda: transpose_2d(x)) * 1e3
    gbs = 4 * M * K / (b * 1e-6) / 1e9
    print(f"transpose {M}x{K} fp16: torch {a:.1f} us, triton {b:.1f} us ({gbs:.0f} GB/s)")
PY
timeout 200 python bench/bench_tile.py --shapes bert,large --G 128 --sparsity 0.9 \
  --row-major 0,0.75,0.9 2>&1 | tee "$OUT/bench_tile.log" | grep "^|"
timeout ${MODELS_TIMEOUT:-300} python bench/bench_models.py --models llama --sparsities 0.5 0.75 0.9 \
  --kernels 8 --layouts row_major --compile-sparsities -1 2>&1 | grep -v "USDT\|Warning\|warn" \
  | tee "$OUT/bench_models.log" | grep "^| [a-z]\|^  "
