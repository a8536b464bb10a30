"""Kernel choice's timing protocol (runtime/cuda/dispatch._measure), on CPU.

The timer is replaced by a script of times in call order, so the test pins down the
protocol: a discarded warm-up timing of the direct dense product; a screening pass over
every dense variant and every candidate; then three rounds over the finalists (the
fastest two dense variants, then the fastest three configs; the middle round in reverse
order), each finalist keeping the median of its rounds, and the choice follows those
medians.
Needs triton importable (dispatch imports the Triton kernels); no GPU.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

pytest.importorskip("triton")

from sparsefx.runtime.cuda import dispatch  # noqa: E402
from sparsefx.runtime.cuda.plan import build_plan  # noqa: E402
from sparsefx.runtime.cuda.triton_tile import TileConfig  # noqa: E402

A, B, C, D = (TileConfig(128, bm, 64, 4, 4) for bm in (16, 32, 64, 128))
S = TileConfig(128, 256, 64, 12, 4, group_cb=32, flat=1, impl="sm90")
S_DIRECT = replace(S, store="direct")
#: features 8..11 pruned: a row-major output the sm90 kernel writes by row segments
GAP = [*range(8), *range(12, 16)]


def measure(monkeypatch, script, configs=(A, B, C, D), feature_major=False,
            fm_variants=("direct", "via_row_major"), warmup=50.0, kept=range(16)):
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
                        lambda fm, M, K=None: fm_variants if fm else ("direct",))
    row_ptr = torch.tensor([0, 3], dtype=torch.int32)
    col_map = torch.tensor(list(kept), dtype=torch.int32)
    plan = build_plan(row_ptr, col_map, 16, 16)
    x = torch.zeros(16, 8)
    dec = dispatch._measure(x, None, None, row_ptr, col_map, None, 16, "none",
                            feature_major, plan, "key", {"M": 8})
    assert next(calls, None) is None, "not every scripted timing was used"
    return dec


def test_final_rounds_correct_a_drifted_screening_pass(monkeypatch):
    # screening: dense 10, A 5, B 6, C 7, D 9 -> finalists dense; A, B, C.
    # rounds: [dense A B C], [C B A dense], [dense A B C]
    # C really is fastest (it ran hot in the screening pass); D keeps its one timing
    dec = measure(monkeypatch, [10, 5, 6, 7, 9,
                                10, 5.5, 6, 4,
                                4.2, 6.1, 5.4, 10.5,
                                9.8, 5.6, 6.2, 4.1])
    assert dec.choice == "sparse" and dec.config == C and dec.sparse_ms == 4.1
    assert dec.dense_ms == 10
    final = {TileConfig.from_dict(c): ms for c, ms in dec.candidates}
    assert final == {A: 5.5, B: 6.1, C: 4.1, D: 9}


def test_one_lucky_timing_does_not_decide(monkeypatch):
    # A once times at 3 (boost clock) but its median is 8; dense's median is 7.5
    dec = measure(monkeypatch, [8, 9,  7.5, 3,  8, 7.4,  7.6, 8.1], configs=(A,))
    assert dec.choice == "dense" and dec.dense_ms == 7.5 and dec.sparse_ms == 8


def test_the_warm_up_timing_is_discarded(monkeypatch):
    # a boost-clock warm-up of 1 would make dense win if it counted
    dec = measure(monkeypatch, [10, 5,  10, 5,  5, 10,  10, 5], configs=(A,),
                  warmup=1.0)
    assert dec.choice == "sparse" and dec.dense_ms == 10 and dec.sparse_ms == 5
    with pytest.raises(RuntimeError, match="out of resources"):
        measure(monkeypatch, [], configs=(A,), warmup=None)   # direct fails at once


def test_dense_wins_when_its_median_is_faster(monkeypatch):
    # screening: dense 9, A 8, B 12 -> rounds over dense, A, B
    dec = measure(monkeypatch, [9, 8, 12,
                                7.5, 8, 12,
                                12, 8.2, 7.4,
                                7.6, 8.1, 11], configs=(A, B))
    assert dec.choice == "dense" and dec.dense_ms == 7.5 and dec.sparse_ms == 8.1
    assert dec.config == A                 # the best sparse config is still recorded


def test_fewer_candidates_than_finalists(monkeypatch):
    dec = measure(monkeypatch, [10, 3,  10, 2,  2, 10,  10, 2.5], configs=(A,))
    assert dec.choice == "sparse" and dec.sparse_ms == 2 and len(dec.candidates) == 1


def test_no_candidate_runs_then_dense(monkeypatch):
    dec = measure(monkeypatch, [10, None, None,  9,  9.5,  9.2], configs=(A, B))
    assert dec.choice == "dense" and dec.dense_ms == 9.2 and dec.sparse_ms is None
    assert dec.config is None and dec.candidates == []


def test_feature_major_keeps_the_faster_dense_variant(monkeypatch):
    # screening: direct 10, via_row_major 9, A 12; the rounds take the dense
    # finalists fastest first (via_row_major, direct), then A
    dec = measure(monkeypatch, [10, 9, 12,
                                9.5, 8.5, 11,
                                11, 8.5, 9.5,
                                9.6, 8.4, 12], configs=(A,), feature_major=True)
    assert dec.choice == "dense" and dec.dense_ms == 8.5
    assert dec.dense_variant == "direct"
    dec = measure(monkeypatch, [10, 9, 12,
                                9, 10, 11,
                                11, 10, 9,
                                9.5, 10, 12], configs=(A,), feature_major=True)
    assert dec.dense_variant == "via_row_major" and dec.dense_ms == 9
    assert dispatch.Decision.from_dict(dec.to_dict()).dense_variant == "via_row_major"


def test_only_the_fastest_dense_variants_reach_the_final_rounds(monkeypatch):
    names = [c.name for c in dispatch.dense_configs(8)]
    variants = ("direct", "via_row_major", *names)
    # screening: direct 10, via 9, triton[0] fails, triton[1] 7, A 12; the finalists
    # are triton[1] and via (direct sits out the rounds), then A
    dec = measure(monkeypatch, [10, 9, None, 7, 12,
                                7.5, 9, 11,
                                11, 9, 7.2,
                                7.1, 9.2, 12], configs=(A,),
                  feature_major=True, fm_variants=variants)
    assert dec.choice == "dense" and dec.dense_variant == names[1] and dec.dense_ms == 7.2


def test_a_finalist_failing_in_a_round_keeps_the_rounds_it_ran(monkeypatch):
    names = [c.name for c in dispatch.dense_configs(8)]
    variants = ("direct", names[0])
    # screening: direct 10, triton 8, A 9; triton fails in rounds 2 and 3
    dec = measure(monkeypatch, [10, 8, 9,
                                8.5, 10, 9,
                                9, 10, None,
                                None, 10, 9], configs=(A,),
                  feature_major=True, fm_variants=variants)
    assert dec.dense_variant == names[0] and dec.dense_ms == 8.5
    assert dec.choice == "dense"


def test_direct_dense_failing_is_an_error(monkeypatch):
    with pytest.raises(RuntimeError, match="out of resources"):
        measure(monkeypatch, [None], configs=(A,), feature_major=True)


def test_median_of_odd_and_even_counts():
    """An entrant keeps the median of the rounds it ran: three rounds, two (one round
    failed: the mean of the middle two), or one."""
    script = {"three": [3.0, 1.0, 8.0], "two": [4.0, None, 1.0],
              "one": [None, 7.0, None]}
    rounds = {name: iter(times) for name, times in script.items()}
    medians = dispatch._final_rounds([("sparse", name) for name in script],
                                     lambda kind, name: next(rounds[name]))
    assert medians[("sparse", "three")] == 3.0        # not the mean, 4.0
    assert medians[("sparse", "two")] == 2.5
    assert medians[("sparse", "one")] == 7.0


def test_feature_major_dense_variants_include_the_triton_kernel():
    for M in (1, 100, 4096):
        fm = dispatch.dense_variants(True, M)
        assert fm[:3] == ("direct", "via_row_major", "mm_epilogue") and len(fm) > 3
        assert all(v.startswith("triton_fm_") for v in fm[3:])
        assert dispatch.dense_variants(False, M) == ("direct",)


def test_row_segment_layers_also_time_direct_stores():
    """Where the sm90 kernel's default epilogue is row segments, each sm90 candidate
    is also timed with direct stores plus the pruned-feature launch; nowhere else."""
    span = build_plan(torch.tensor([0, 3]), torch.tensor(GAP), 16, 16)
    bulk = build_plan(torch.tensor([0, 3]), torch.arange(16), 16, 16)
    assert span.sm90_store(False) == "span" and bulk.sm90_store(False) == "bulk"
    assert dispatch.with_store_variants([A, S], span, False) == [A, S, S_DIRECT]
    assert dispatch.with_store_variants([A, S], span, True) == [A, S]    # fm: direct
    assert dispatch.with_store_variants([A, S], bulk, False) == [A, S]
    # a second pass adds nothing: the variant is not doubled again
    twice = dispatch.with_store_variants([A, S, S_DIRECT], span, False)
    assert twice == [A, S, S_DIRECT]


def test_choice_keeps_direct_stores_when_they_time_faster(monkeypatch):
    # screening: dense 10, S 5, S_DIRECT 4; rounds over dense, S_DIRECT, S
    dec = measure(monkeypatch, [10, 5, 4,
                                10, 4, 5,
                                5.1, 4.1, 10,
                                10, 4.2, 5], configs=(S,), kept=GAP)
    assert dec.choice == "sparse" and dec.config == S_DIRECT and dec.sparse_ms == 4.1
    assert {TileConfig.from_dict(c) for c, _ in dec.candidates} == {S, S_DIRECT}
    assert dispatch.Decision.from_dict(dec.to_dict()).config.store == "direct"


def test_store_is_an_sm90_epilogue_name():
    with pytest.raises(ValueError, match="only for impl='sm90'"):
        TileConfig(128, 128, 64, 4, 4, store="direct")
    with pytest.raises(ValueError, match="store is one of"):
        replace(S, store="rows")
    # decisions cached before the field existed load with the plan's default
    old = {k: v for k, v in S.to_dict().items() if k != "store"}
    assert TileConfig.from_dict(old) == S and S.store == ""
