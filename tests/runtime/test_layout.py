"""Layout conversion helpers against plain transposes."""
import torch

from sparsefx.runtime import layout


def test_heads_to_feature_major_is_the_two_step_route_in_one_copy():
    a = torch.randn(2, 3, 5, 4)                      # [B, H, S, d]
    two_step = layout.to_feature_major(a.transpose(1, 2).reshape(2, 5, 12))
    out = layout.heads_to_feature_major(a)
    assert torch.equal(out, two_step) and out.is_contiguous() and out.shape == (12, 10)


def test_tokens_to_shape_restores_token_dims():
    y = torch.randn(10, 7)
    like = torch.randn(2, 5, 3)
    assert layout.tokens_to_shape(y, like).shape == (2, 5, 7)
    assert layout.tokens_to_shape(y, None, [5, 2, 9]).shape == (5, 2, 7)
    assert torch.equal(layout.tokens_to_shape(y, like).reshape(10, 7), y)


def test_round_trip():
    x = torch.randn(2, 5, 6)
    assert torch.equal(layout.from_feature_major(layout.to_feature_major(x), like=x), x)
