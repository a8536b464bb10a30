"""Why do graph-replay times of the dense HF models exceed the sum of their kernels?

For dense BERT-base and ViT-B/16 (fp16, bench_models shapes) print: CUDA-graph replay
ms, eager ms (events around a loop), and the kernel-time sum of one eager forward and
of one graph replay under torch.profiler, with the top kernels of each. Also the
captured sparsefx graph's op counts (what runs on the GPU after capture)."""
import sys
from collections import Counter

import torch

sys.path.insert(0, "bench")
import bench_models as bm  # noqa: E402
import sparsefx  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402


def kernel_sum(fn, top=8):
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    per = Counter()
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            per[evt.name[:90]] += evt.device_time / 1e3
    return sum(per.values()), per.most_common(top)


for name in [a for a in sys.argv[1:] if not a.startswith("--")] or ["bert", "vit"]:
    model, ex = bm.build(name, False)
    model = model.to("cuda", torch.half)
    inputs = tuple(t.to("cuda") if not t.is_floating_point() else t.to("cuda", torch.half)
                   for t in ex)
    with torch.no_grad():
        replay, ok = bm.graphed(model, inputs, "cuda")
        g_ms = bm.time_ms(replay, "cuda", 20)
        e_ms = bm.time_ms(lambda: model(*inputs), "cuda", 20)
        s_e, top_e = kernel_sum(lambda: model(*inputs))
        s_g, top_g = (kernel_sum(replay) if "--profile-replay" in sys.argv
                      else (float("nan"), []))
        print(f"## {name}: graph replay {g_ms:.3f} ms (captured={ok}), eager loop {e_ms:.3f} ms, "
              f"kernel sum eager {s_e:.3f} ms, kernel sum of one replay {s_g:.3f} ms")
        print("  top eager:", [(k, round(v, 3)) for k, v in top_e])
        print("  top replay:", [(k, round(v, 3)) for k, v in top_g])
        if name == "bert":
            sm = sparsefx.compile(model, inputs, G=128, sparsity=0.75)
            ops = Counter(str(n.target) for n in sm.graph.nodes
                          if n.op in ("call_function", "call_method"))
            print("  sparsefx graph ops:", ops.most_common(40))
            for n in sm.graph.nodes:
                if "scaled_dot_product" in str(n.target):
                    print("  sdpa node:", n.format_node()[:400])
                    break
