"""choose_kernel: times sparse vs dense per layer on a GPU; records why it cannot on CPU."""
import pytest
import torch

import sparsefx
from sparsefx.passes.choose_kernel import KERNEL_META, ChooseKernel
from sparsefx_testing import MLP, substituted


def test_without_gpu_records_why_and_changes_nothing():
    if sparsefx.runtime.CUDA_KERNELS_ACTIVE:
        pytest.skip("CUDA kernels are active here")
    gm, ctx = substituted(MLP(), torch.randn(4, 48), sparsity=0.75)
    code = gm.code
    result = ChooseKernel()(gm, ctx)
    assert not result.modified and gm.code == code
    assert [r.action for r in result.records] == ["kernel_choice_skipped"]
    assert "no CUDA GPU" in result.records[0].numbers["reason"]
    assert not any(KERNEL_META in n.meta for n in gm.graph.nodes)


def test_does_not_fire_without_sparse_ops():
    gm, ctx = substituted(MLP(), torch.randn(4, 48), sparsity=0.0)
    result = ChooseKernel()(gm, ctx)
    assert not result.modified and not result.records


@pytest.mark.cuda
def test_times_each_layer_on_gpu_and_is_idempotent():
    model = MLP(d_in=256, hidden=512, d_out=256).cuda().half()
    x = torch.randn(1024, 256, device="cuda", dtype=torch.half)
    gm, ctx = substituted(model, x, sparsity=0.75, G=64)
    result = ChooseKernel()(gm, ctx)
    chosen = [r for r in result.records if r.action == "kernel_chosen"]
    assert len(chosen) == 3 and result.modified
    for node in gm.graph.nodes:
        if node.target is torch.ops.sparsefx.tile_linear.default:
            meta = node.meta[KERNEL_META]
            assert meta["choice"] in ("sparse", "dense")
            assert meta["sparse_ms"] > 0 and meta["dense_ms"] > 0
    again = ChooseKernel()(gm, ctx)
    assert not again.modified
    sm = sparsefx.compile(model, x, G=64, sparsity=0.75)
    assert all(row.dense_ms is not None for row in sm.log.layers if row.op.startswith("tile"))
    reference = sparsefx.prune(model, x, G=64, sparsity=0.75)
    out, ref = sm(x).float(), reference(x).float()
    assert ((out - ref).norm() / ref.norm()).item() < 1e-2
