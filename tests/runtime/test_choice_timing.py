"""Kernel choice's two-pass timing (runtime/cuda/dispatch._measure), on CPU.

The timer is replaced by a script of times in call order, so the test pins down the
protocol: a discarded warm-up timing of the direct dense product, dense and every
candidate once, then the fastest few and dense again in reverse order, each keeping its
best time, and the choice follows the final times.
Needs triton importable (dispatch imports the Triton kernels); no GPU.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from sparsefx.runtime.cuda import dispatch  # noqa: E402
from sparsefx.runtime.cuda.plan import build_plan  # noqa: E402
from sparsefx.runtime.cuda.triton_tile import TileConfig  # noqa: E402

A, B, C, D = (TileConfig(128, bm, 64, 4, 4) for bm in (16, 32, 64, 128))


def measure(monkeypatch, script, configs=(A, B, C, D), feature_major=False,
            fm_variants=("direct", "via_row_major"), warmup=50.0):
    """Run _measure with ``script`` as the successive _time_ms results after the
    warm-up timing (``warmup``; a row-major layer times one dense variant, a
    feature-major one ``fm_variants``)."""
    calls = iter([warmup, *script])

    def timer(fn):
        ms = next(calls)
        if ms is None:            # a variant that fails to run
            raise RuntimeError("out of resources")
        return ms

    monkeypatch.setattr(dispatch, "_time_ms", timer)
    monkeypatch.setattr(dispatch, "candidate_configs", lambda M, G, fm: list(configs))
    monkeypatch.setattr(dispatch, "dense_variants",
                        lambda fm, M: fm_variants if fm else ("direct",))
    row_ptr = torch.tensor([0, 3], dtype=torch.int32)
    col_map = torch.arange(16, dtype=torch.int32)
    plan = build_plan(row_ptr, col_map, 16, 16)
    x = torch.zeros(16, 8)
    dec = dispatch._measure(x, None, None, row_ptr, col_map, None, 16, "none",
                            feature_major, plan, "key", {"M": 8})
    assert next(calls, None) is None, "not every scripted timing was used"
    return dec


def test_second_pass_corrects_a_drifted_first_pass(monkeypatch):
    # pass 1: dense 10, A 5, B 6, C 7, D 9 -> finalists A, B, C re-timed as C, B, A
    # (C really is fastest: it ran hot the first time), then dense again
    dec = measure(monkeypatch, [10, 5, 6, 7, 9, 4, 6.5, 5.5, 11])
    assert dec.choice == "sparse" and dec.config == C and dec.sparse_ms == 4
    assert dec.dense_ms == 10
    final = {TileConfig.from_dict(c): ms for c, ms in dec.candidates}
    assert final == {A: 5, B: 6, C: 4, D: 9}


def test_the_warm_up_timing_is_discarded(monkeypatch):
    # a boost-clock warm-up of 1 would make dense win if it counted
    # (pass 1: dense 10, A 5; pass 2: A 6, dense 12)
    dec = measure(monkeypatch, [10, 5, 6, 12], configs=(A,), warmup=1.0)
    assert dec.choice == "sparse" and dec.dense_ms == 10 and dec.sparse_ms == 5
    with pytest.raises(RuntimeError, match="out of resources"):
        measure(monkeypatch, [], configs=(A,), warmup=None)   # direct fails at once


def test_dense_wins_when_its_best_time_is_faster(monkeypatch):
    # pass 1: dense 9, A 8, B 12; pass 2: B 8.5, A 9, dense 7.5 -> dense (8 vs 7.5)
    dec = measure(monkeypatch, [9, 8, 12, 8.5, 9, 7.5], configs=(A, B))
    assert dec.choice == "dense" and dec.dense_ms == 7.5 and dec.sparse_ms == 8
    assert dec.config == A                 # the best sparse config is still recorded


def test_fewer_candidates_than_finalists(monkeypatch):
    dec = measure(monkeypatch, [10, 3, 2, 10], configs=(A,))
    assert dec.choice == "sparse" and dec.sparse_ms == 2 and len(dec.candidates) == 1


def test_feature_major_keeps_the_faster_dense_variant(monkeypatch):
    # pass 1: direct 10, via_row_major 9, A 12; pass 2: A 11, direct 8.5, via 9.5
    dec = measure(monkeypatch, [10, 9, 12, 11, 8.5, 9.5], configs=(A,),
                  feature_major=True)
    assert dec.choice == "dense" and dec.dense_ms == 8.5
    assert dec.dense_variant == "direct"
    dec = measure(monkeypatch, [10, 9, 12, 11, 10, 9.5], configs=(A,),
                  feature_major=True)
    assert dec.dense_variant == "via_row_major" and dec.dense_ms == 9
    assert dispatch.Decision.from_dict(dec.to_dict()).dense_variant == "via_row_major"


def test_a_dense_triton_variant_can_win_and_a_failing_one_is_skipped(monkeypatch):
    names = [c.name for c in dispatch.dense_configs(8)]
    variants = ("direct", "via_row_major", *names)
    # pass 1: direct 10, via 9, triton[0] fails, triton[1] 7, A 12;
    # pass 2: A 11, direct 10, via 9, triton[0] fails again, triton[1] 7.5
    dec = measure(monkeypatch, [10, 9, None, 7, 12, 11, 10, 9, None, 7.5], configs=(A,),
                  feature_major=True, fm_variants=variants)
    assert dec.choice == "dense" and dec.dense_variant == names[1] and dec.dense_ms == 7


def test_direct_dense_failing_is_an_error(monkeypatch):
    with pytest.raises(RuntimeError, match="out of resources"):
        measure(monkeypatch, [None], configs=(A,), feature_major=True)


def test_feature_major_dense_variants_include_the_triton_kernel():
    for M in (1, 100, 4096):
        fm = dispatch.dense_variants(True, M)
        assert fm[:3] == ("direct", "via_row_major", "mm_epilogue") and len(fm) > 3
        assert all(v.startswith("triton_fm_") for v in fm[3:])
        assert dispatch.dense_variants(False, M) == ("direct",)
