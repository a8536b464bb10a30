"""fold_attention_mask: constant all-visible masks are dropped, causal ones become
``is_causal=True``; masks derived from inputs or masking real positions stay."""
import torch
import torch.nn.functional as F
from torch import fx, nn

from sparsefx_testing import make_context, rel_err, small_bert, small_gpt2
from sparsefx.passes.clean_graph import CleanGraph
from sparsefx.passes.fold_attention_mask import FoldAttentionMask

SDPA = torch.ops.aten.scaled_dot_product_attention.default


class ConstMaskAttention(nn.Module):
    """SDPA with a mask built from constants only, like the mask code HF traces into a
    graph whose shapes are fixed (``torch.export``)."""

    def __init__(self, kind: str, batch: int = 2, length: int = 6):
        super().__init__()
        self.kind, self.batch, self.length = kind, batch, length

    def forward(self, q, k, v):
        L = S = self.length
        i = torch.arange(L)[:, None]
        j = torch.arange(S)[None, :]
        if self.kind == "all":
            mask = (j >= 0) & (i >= 0)
        elif self.kind == "causal":
            mask = j <= i
        elif self.kind == "causal_float":
            mask = torch.zeros(L, S).masked_fill(j > i, float("-inf"))
        else:   # "window": a real local-attention mask, must stay
            mask = (j - i).abs() <= 1
        mask = mask[None, None].expand(self.batch, 1, L, S)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class ShapeMaskAttention(nn.Module):
    """A mask computed from the input's run-time shape (symbolic_trace keeps it
    symbolic): it may differ at another shape, so it must never be folded."""

    def forward(self, q, k, v):
        i = torch.arange(q.shape[-2])[:, None]
        j = torch.arange(k.shape[-2])[None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=j < 6)


class InputMaskAttention(nn.Module):
    def forward(self, q, k, v, keep):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])


def qkv(L=6):
    return tuple(torch.randn(2, 3, L, 8) for _ in range(3))


def sdpa_nodes(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function"
            and n.target in (SDPA, F.scaled_dot_product_attention)]


def mask_of(node):
    return node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")


def causal_of(node):
    return node.args[5] if len(node.args) > 5 else node.kwargs.get("is_causal", False)


def fold(model, inputs):
    gm, ctx = make_context(model, inputs)
    expected = gm(*inputs)
    result = FoldAttentionMask()(gm, ctx)
    return gm, ctx, result, expected


def test_all_visible_mask_is_dropped_and_numbers_match():
    inputs = qkv()
    gm, ctx, result, expected = fold(ConstMaskAttention("all"), inputs)
    assert result.modified
    assert [r.numbers["became"] for r in result.records] == ["all_visible"]
    assert all(mask_of(n) is None for n in sdpa_nodes(gm))
    fresh = qkv()
    assert rel_err(gm(*fresh), ConstMaskAttention("all")(*fresh)) < 1e-6
    assert rel_err(gm(*inputs), expected) < 1e-6


def test_causal_masks_become_is_causal():
    for kind in ("causal", "causal_float"):
        inputs = qkv()
        gm, ctx, result, _ = fold(ConstMaskAttention(kind), inputs)
        assert result.modified, kind
        node, = sdpa_nodes(gm)
        assert mask_of(node) is None and causal_of(node) is True
        fresh = qkv()
        assert rel_err(gm(*fresh), ConstMaskAttention(kind)(*fresh)) < 1e-6


def test_partial_constant_mask_is_kept():
    gm, ctx, result, _ = fold(ConstMaskAttention("window"), qkv())
    assert not result.modified
    assert result.records[0].action == "kept"
    assert all(isinstance(mask_of(n), fx.Node) for n in sdpa_nodes(gm))


def test_mask_from_run_time_shapes_is_kept():
    gm, ctx, result, _ = fold(ShapeMaskAttention(), qkv())
    assert not result.modified
    longer = qkv(L=9)
    assert rel_err(gm(*longer), ShapeMaskAttention()(*longer)) < 1e-6


def test_mask_from_an_input_is_never_touched():
    q, k, v = qkv()
    keep = torch.ones(2, 6, dtype=torch.bool)      # all True *now*, but it is an input
    gm, ctx, result, _ = fold(InputMaskAttention(), (q, k, v, keep))
    assert not result.modified
    keep[:, -2:] = False
    assert rel_err(gm(q, k, v, keep), InputMaskAttention()(q, k, v, keep)) < 1e-6


def test_hf_bert_and_gpt2_masks_fold():
    ids = torch.randint(0, 100, (2, 8))
    for model, became in ((small_bert(), "all_visible"), (small_gpt2(), "causal")):
        gm, ctx, result, expected = fold(model, (ids,))
        assert result.modified and {r.numbers["became"] for r in result.records
                                    if r.action == "mask_folded"} == {became}
        gm = CleanGraph()(gm, ctx).gm
        fresh = torch.randint(0, 100, (2, 8))
        out = gm(fresh).last_hidden_state
        assert rel_err(out, model(fresh).last_hidden_state) < 1e-5


def test_second_run_changes_nothing():
    gm, ctx, result, _ = fold(ConstMaskAttention("causal"), qkv())
    code = gm.code
    again = FoldAttentionMask()(gm, ctx)
    assert not again.modified and gm.code == code
