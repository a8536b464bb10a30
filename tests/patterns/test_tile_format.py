"""The TW layout and packed format: masks, pack -> unpack round trip, gather."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsefx.patterns.tile import (TileLayout, gather_tensors, layout_from_mask, pack,
                                    unpack)


def random_layout(n, k, G, col_keep_p, row_keep_p, seed):
    gen = torch.Generator().manual_seed(seed)
    kept_cols = torch.nonzero(torch.rand(n, generator=gen) < col_keep_p).flatten()
    tiles = -(-kept_cols.numel() // G)
    tile_keep = torch.rand(tiles, k, generator=gen) < row_keep_p
    return TileLayout(n, k, G, kept_cols, tile_keep)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), k=st.integers(1, 40), G=st.integers(1, 33),
       col_p=st.floats(0.0, 1.0), row_p=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_pack_unpack_round_trips_exactly(n, k, G, col_p, row_p, seed):
    layout = random_layout(n, k, G, col_p, row_p, seed)
    weight = torch.randn(n, k, generator=torch.Generator().manual_seed(seed + 1))
    packed = pack(weight, layout)
    assert torch.equal(unpack(packed), weight * layout.mask())
    # every stored element outside edge-tile padding is a kept element
    assert packed.values.shape == (int(layout.tile_keep.sum()), G)
    assert packed.row_ptr[-1].item() == packed.values.shape[0]
    assert layout.kept_elements() == int(layout.mask().sum())


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 50), k=st.integers(1, 30), G=st.integers(1, 20),
       p=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_layout_from_any_mask_covers_it(n, k, G, p, seed):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, k, generator=gen) < p
    layout = layout_from_mask(mask, G)
    assert (layout.mask() | ~mask).all()                  # covers every kept element
    weight = torch.randn(n, k, generator=gen)
    assert torch.equal(unpack(pack(weight * mask, layout)), weight * mask)


def test_layout_from_tw_mask_is_its_own_layout():
    layout = random_layout(40, 24, 8, 0.8, 0.5, seed=3)
    layout.tile_keep[:, 0] = True                          # no kept column is empty
    again = layout_from_mask(layout.mask(), 8)
    assert torch.equal(again.kept_cols, layout.kept_cols)
    assert torch.equal(again.tile_keep, layout.tile_keep)


def test_edge_tile_and_empty_tile():
    layout = TileLayout(10, 6, 4, torch.tensor([0, 2, 3, 5, 7, 8, 9]),
                        torch.tensor([[1, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.bool))
    assert layout.tile_widths().tolist() == [4, 3]
    weight = torch.randn(10, 6)
    packed = pack(weight, layout)
    assert packed.row_ptr.tolist() == [0, 3, 3]            # tile 1 is empty
    assert packed.col_map.tolist() == [0, 2, 3, 5, 7, 8, 9]
    assert torch.equal(unpack(packed), weight * layout.mask())
    assert torch.equal(packed.values[:, :4], weight[[0, 2, 3, 5]][:, [0, 2, 5]].t())


def test_gather_is_the_inverse_of_unpack_on_kept_positions():
    layout = random_layout(33, 17, 8, 0.9, 0.6, seed=5)
    packed = pack(torch.randn(33, 17), layout)
    dense = unpack(packed)
    again = gather_tensors(dense, packed.row_idx, packed.row_ptr, packed.col_map, 8)
    assert torch.equal(again, packed.values)


def test_pack_rejects_wrong_shape():
    layout = random_layout(8, 8, 4, 1.0, 1.0, seed=0)
    try:
        pack(torch.randn(8, 9), layout)
    except ValueError as exc:
        assert "does not match" in str(exc)
    else:
        raise AssertionError("pack accepted a weight of the wrong shape")
