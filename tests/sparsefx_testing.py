"""Shared test helpers: tiny models of every kind sparsefx must handle, and helpers to
run a prefix of the pass pipeline on a hand-built context. (A plain module, not a
conftest, so that test files import it by a name no other conftest shadows.)"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from sparsefx.api import _capture_and_analyse
from sparsefx.capture import capture, normalize_inputs
from sparsefx.config import make_config
from sparsefx.passes.infra import PassContext
from sparsefx.passes.pack_weights import PackWeights
from sparsefx.passes.substitute_ops import SubstituteOps


#: kept rows per tile of the ``slices`` structure of :func:`make_tile_layer`
SLICE_COUNTS = (1, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 80, 97, 113)


def make_tile_layer(N: int, K: int, G: int, structure: str, gen: torch.Generator):
    """A packed random TW weight ``(packed, layout)`` for the kernel tests. Structures:
    ``uneven``: kept output features a random subset (``col_map`` not contiguous, some
    features missing), per-tile density drawn in [0, 1], one empty tile, an edge tile;
    ``single``: one (edge) tile; ``empty``: every tile empty; ``dense``: every row kept
    (k_t = K); ``ragged``: every tile's k_t drawn so that none is a multiple of 64;
    ``gap``: like ``uneven`` densities, but the pruned output features are one run of 16
    at a tile boundary (each tile's features stay one contiguous run starting at a
    multiple of 8);
    ``tail``: the last 5 output features pruned (the edge tile's padding would cover
    them);
    ``spans``: like ``uneven`` densities, with pruned output features placed where a
    row-segment epilogue must get them right: the first 3, one run of 100 (wider than
    a 64-feature block), every other feature over a stretch of 40, the last 7
    (needs N >= 400);
    ``slices``: tile t keeps ``SLICE_COUNTS[t % 16]`` rows, so the last 64-row K-step
    of the tiles holds every count of 16-row slices, ending inside, at and just past a
    slice boundary (needs K >= 113)."""
    from sparsefx.patterns.tile import TileLayout, pack
    kept = torch.arange(N)
    if structure == "uneven":
        kept = torch.sort(torch.randperm(N, generator=gen)[: N - max(1, N // 10)]).values
    elif structure == "gap":
        kept = torch.cat([torch.arange(G), torch.arange(G + 16, N)])
    elif structure == "tail":
        kept = torch.arange(N - 5)
    elif structure == "spans":
        pruned = torch.zeros(N, dtype=torch.bool)
        pruned[:3] = pruned[150:250] = pruned[300:340:2] = pruned[N - 7:] = True
        kept = torch.nonzero(~pruned).flatten()
    T = -(-kept.numel() // G)
    if structure == "dense":
        keep = torch.ones(T, K, dtype=torch.bool)
    elif structure == "empty":
        keep = torch.zeros(T, K, dtype=torch.bool)
    elif structure == "slices":
        keep = torch.zeros(T, K, dtype=torch.bool)
        for t in range(T):
            keep[t, torch.randperm(K, generator=gen)[:SLICE_COUNTS[t % 16]]] = True
    elif structure == "ragged":
        keep = torch.zeros(T, K, dtype=torch.bool)
        for t in range(T):
            k = int(torch.randint(1, K, (1,), generator=gen))
            k += 1 if k % 64 == 0 else 0
            keep[t, torch.randperm(K, generator=gen)[:k]] = True
    else:
        dens = torch.rand(T, 1, generator=gen)
        keep = torch.rand(T, K, generator=gen) < dens
        if structure == "uneven" and T > 1:
            keep[T // 2] = False
    layout = TileLayout(N, K, G, kept, keep)
    return pack(torch.randn(N, K, generator=gen), layout), layout


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


class MLP(nn.Module):
    def __init__(self, d_in=48, hidden=96, d_out=40):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):
    """conv+BN+ReLU blocks, a Conv1d branch and a grouped conv the pattern must skip."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 48, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(48)
        self.depthwise = nn.Conv2d(48, 48, 3, padding=1, groups=48)
        self.head = nn.Linear(48, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.depthwise(x)
        return self.head(x.mean(dim=(2, 3)))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 32, 5, padding=2, dilation=1, stride=2)

    def forward(self, x):
        return torch.relu(self.conv(x))


class FunctionalLinear(nn.Module):
    """Calls F.linear directly on its own parameters (no nn.Linear)."""

    def __init__(self, d_in=40, d_out=64):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(d_out, d_in) / d_in ** 0.5)
        self.b1 = nn.Parameter(torch.randn(d_out) * 0.1)
        self.w2 = nn.Parameter(torch.randn(d_out, d_out) / d_out ** 0.5)

    def forward(self, x):
        return F.linear(torch.tanh(F.linear(x, self.w1, self.b1)), self.w2)


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial running stats and affine parameters, so BN is not the identity."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    return model


def small_bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=100,
                                     max_position_embeddings=64)
    return transformers.BertModel(config).eval()


def small_gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100,
                                     n_positions=64, use_cache=False, bos_token_id=0,
                                     eos_token_id=0)
    return transformers.GPT2Model(config).eval()


def make_context(model: nn.Module, example_inputs=None, **options) -> tuple[fx.GraphModule, PassContext]:
    """Capture ``model`` and build the context the passes expect."""
    args, kwargs = normalize_inputs(example_inputs)
    captured = capture(model, args, kwargs)
    ctx = PassContext(config=make_config(**options), model=model, example_args=args,
                      example_kwargs=kwargs, frontend=captured.frontend)
    return captured.gm, ctx


def run_passes(gm, ctx, passes):
    results = []
    for p in passes:
        result = p(gm, ctx)
        gm = result.gm
        results.append(result)
    return gm, results


# --- builders for the rewrite-pass tests ----------------------------------------------
def substituted(model, example, **options):
    """``(gm, ctx)``: ``model`` captured, analysed, packed and substituted."""
    cfg = make_config(**{"G": 16, "sparsity": 0.5, **options})
    gm, ctx, _ = _capture_and_analyse(model.eval(), example, cfg)
    for p in (PackWeights(), SubstituteOps()):
        gm = p(gm, ctx).gm
    return gm, ctx


def ops_in(gm: fx.GraphModule, target) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == target]


def run(gm, *args):
    with torch.no_grad():
        return gm(*args)


def rel(a, b) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def tile_reference(x, packed, bias, activation, feature_major):
    """float64 ``activation(x @ W.T + b)`` of a packed TW weight (``unpack`` gives exactly
    ``W * mask``), in the layer's layout: ``x [K, M] -> [N, M]`` when ``feature_major``."""
    from sparsefx.patterns.tile import unpack
    from sparsefx.runtime.ops import apply_activation
    w = unpack(packed).double().to(x.device)
    xd = x.double()
    y = w @ xd if feature_major else xd @ w.t()
    if bias is not None:
        y = y + (bias.double()[:, None] if feature_major else bias.double())
    return apply_activation(y, activation)


def kernel_rel_err(out, ref):
    """:func:`rel_err` for kernel outputs: fails on any NaN (the kernel tests poison their
    outputs with NaN, so a NaN is an element never written) and allows an all-zero
    reference (an empty layer without bias)."""
    assert not torch.isnan(out).any(), "NaN in output: an element was not written"
    return float((out.double() - ref).norm() / ref.norm().clamp_min(1e-30))


def run_in_triton_interpreter(code: str, timeout: int = 600):
    """Run ``code`` in a fresh Python under ``TRITON_INTERPRET=1`` (Triton reads the
    flag when it is first imported, so it cannot be switched on inside this process),
    with the repository and ``tests/`` importable. Returns the CompletedProcess."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")])}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=root)
