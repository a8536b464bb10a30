"""Diagnose kernel choice on BERT-base at 75% (GPU only): per-layer decisions from the
pass log, and every candidate config timed against dense for one layer, both layouts."""
import sys
import traceback

import torch
from triton.testing import do_bench

sys.path.insert(0, "bench")
import sparsefx  # noqa: E402
from sparsefx.runtime.cuda import dispatch  # noqa: E402
import bench_models as bm  # noqa: E402

model, example = bm.build("bert", False)
model = model.to("cuda", torch.float16)
inputs = tuple(t.to("cuda") for t in example)
sm = sparsefx.compile(model, inputs, G=128, sparsity=0.75)
for row in sm.log.layers[:8]:
    print(row.name, round(row.achieved_sparsity, 3), row.op, row.sparse_ms, row.dense_ms)
for p in sm.log.passes:
    if p.name == "choose_kernel":
        for rec in p.records[:4]:
            print(rec)
print("first decision:", dispatch.decisions()[0].to_dict())
packed = sm.get_submodule("sparsefx_packed.encoder_layer_0_intermediate_dense")
plan = dispatch.get_plan(packed.row_ptr, packed.col_map, packed.out_features,
                         packed.values.shape[1])
for fm in (True, False):
    x = torch.randn((768, 4096) if fm else (4096, 768), device="cuda", dtype=torch.half)
    args = (x, packed.values, packed.row_idx, packed.row_ptr, packed.col_map, packed.bias,
            packed.out_features, "gelu", fm)
    for cfg in dispatch.candidate_configs(4096, 128, fm):
        try:
            ms = do_bench(lambda: dispatch.sparse_forward(*args, plan, cfg), return_mode="median")
            print("feature_major", fm, cfg, round(ms * 1000, 1), "us")
        except Exception as exc:  # noqa: BLE001
            print("feature_major", fm, cfg, "FAILED", type(exc).__name__, str(exc)[:300])
    print("dense_forward", round(do_bench(lambda: dispatch.dense_forward(*args),
                                          return_mode="median") * 1000, 1), "us")
w = torch.randn(3072, 768, device="cuda", dtype=torch.half)
xr = torch.randn(4096, 768, device="cuda", dtype=torch.half)
print("F.linear", round(do_bench(lambda: torch.nn.functional.linear(xr, w),
                                 return_mode="median") * 1000, 1), "us")
