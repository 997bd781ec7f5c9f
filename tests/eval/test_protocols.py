"""Evaluation protocols on hand-built toy sets, and the result tables."""

import json

import numpy as np
import pytest

from hotformerloc.eval import (
    CrossSourceSet,
    DescriptorRetriever,
    EvalRun,
    EvaluationError,
    Ranking,
    Retriever,
    evaluate_cross_source,
    evaluate_intra_sequence,
    evaluate_loop_closure,
    evaluate_pnv,
    evaluate_wild_places_inter,
    markdown_table,
    paper_table,
)


def _run(name, items, pos, is_query=None):
    return EvalRun(name, np.array(items), np.array(pos, float), is_query)


# ---------------------------------------------------------------- PointNetVLAD protocol
#
# Global items (1-D descriptors):
#   run A: items 0, 1, 2   desc 0, 5, 10       at (0,0), (50,0), (100,0)     all queries
#   run B: items 3, 4, 5   desc 5.5, 0.4, 20   at (0,3), (50,3), (500,0)     all queries
#   run C: items 6, 7      desc 100, 200       at (5000,5000), (5100,5000)   query: item 6
#   run A2: items 8, 9, 10 desc 0, 5, 10       same places as A              all queries
DESC = np.array([0, 5, 10, 5.5, 0.4, 20, 100, 200, 0, 5, 10], float)[:, None]
A = _run("A", [0, 1, 2], [[0, 0], [50, 0], [100, 0]], [True, True, True])
B = _run("B", [3, 4, 5], [[0, 3], [50, 3], [500, 0]], [True, True, True])
C = _run("C", [6, 7], [[5000, 5000], [5100, 5000]], [True, False])
A2 = _run("A2", [8, 9, 10], [[0, 0], [50, 0], [100, 0]], [True, True, True])
RET = DescriptorRetriever(DESC)

# A -> B (threshold 10 m, k 2): A0 (0): true {B0}, ranks B1, B0 -> 2
#                               A1 (5): true {B1}, ranks B0, B1 -> 2
#                               A2: no true neighbour -> skipped
#   R@1 0, R@2 100, R@1% (|DB| 3 -> top 1) 0, MRR hits 50, MRR std 50
# B -> A: B0 (5.5): true {A0}, ranks A1, A2 -> miss
#         B1 (0.4): true {A1}, ranks A0, A1 -> 2
#         B2: skipped
#   R@1 0, R@2 50, R@1% 0, MRR hits 50, MRR std 25


def test_pnv_skip_same_run_hand_computed():
    res = evaluate_pnv(RET, [A, B], threshold=10.0, k=2)
    assert list(res.pairs) == [("A", "B"), ("B", "A")]
    ab, ba = res.pairs["A", "B"], res.pairs["B", "A"]
    np.testing.assert_allclose(ab.recall, [0, 100])
    np.testing.assert_allclose(ba.recall, [0, 50])
    assert (ab.num_queries, ab.num_skipped, ba.num_queries) == (2, 1, 2)
    assert (ba.mrr_hits, ba.mrr) == pytest.approx((50.0, 25.0))
    np.testing.assert_allclose(res.recall, [0, 75])
    assert res.r1 == 0 and res.recall_1pct == 0
    assert (res.mrr_hits, res.mrr) == pytest.approx((50.0, 37.5))
    assert res.skipped_pairs == ()


def test_pnv_same_run_pairs_when_not_skipped():
    # A -> A and B -> B: every query finds itself (distance 0, 0 m) at rank 1
    res = evaluate_pnv(RET, [A, B], threshold=10.0, k=2, skip_same_run=False)
    assert set(res.pairs) == {("A", "A"), ("A", "B"), ("B", "A"), ("B", "B")}
    assert res.pairs["A", "A"].num_queries == 3 and res.pairs["A", "A"].r1 == 100
    np.testing.assert_allclose(res.recall, [(0 + 0 + 100 + 100) / 4, (100 + 50 + 100 + 100) / 4])
    assert res.recall_1pct == pytest.approx(50.0)
    assert (res.mrr_hits, res.mrr) == pytest.approx((75.0, 68.75))
    # database restricted to run A (CS-Campus3D style): pairs A -> A and B -> A only
    only_a = evaluate_pnv(RET, [A, B], 10.0, skip_same_run=False, k=2, database_runs=["A"])
    assert list(only_a.pairs) == [("A", "A"), ("B", "A")] and only_a.r1 == pytest.approx(50.0)


def test_pnv_pairs_without_evaluable_query_are_skipped_and_listed():
    res = evaluate_pnv(RET, [A, B, C], threshold=10.0, k=2)
    assert set(res.skipped_pairs) == {("A", "C"), ("B", "C"), ("C", "A"), ("C", "B")}
    assert list(res.pairs) == [("A", "B"), ("B", "A")]
    np.testing.assert_allclose(res.recall, [0, 75])  # unchanged by C
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["pairs"]["B->A"]["mrr"] == pytest.approx(25.0) and ["C", "A"] in d["skipped_pairs"]


def test_pnv_no_evaluable_pair_raises():
    with pytest.raises(EvaluationError, match=r"Forest.*no evaluable"):
        evaluate_pnv(RET, [A, C], threshold=10.0, name="Forest")
    with pytest.raises(ValueError, match="unique"):
        evaluate_pnv(RET, [A, A], threshold=10.0)


def test_wild_places_inter_means_over_pairs_then_locations():
    # location X = {A, B}: means above. location Y = {A, A2}: identical twins, all R@1 = 100
    res = evaluate_wild_places_inter(
        RET, {"X": [A, B], "Y": [A, A2]}, threshold=10.0, k=2, groups={"only Y": ["Y"]}
    )
    assert res.locations["Y"].r1 == 100 and list(res.locations["Y"].pairs) == [
        ("A", "A2"),
        ("A2", "A"),
    ]
    np.testing.assert_allclose(res.recall, [(0 + 100) / 2, (75 + 100) / 2])
    assert (res.mrr_hits, res.mrr) == pytest.approx(((50 + 100) / 2, (37.5 + 100) / 2))
    assert res.groups["only Y"].r1 == 100


# ------------------------------------------------------------------------- cross-source
#
# Location K: aerial AER items 0..3 desc 0, 10, 20, 30 at x = 0, 40, 80, 120 (y 0), 30 m radius
#   G1: item 4 desc 1 at (0,0)   true {AER0} -> rank 1
#       item 5 desc 16 at (40,5) true {AER1} -> ranks AER2 (4), AER1 (6) -> 2
#       R@1 50, R@2 100, R@1% (|DB| 4 -> 1) 50, MRR 75
#   G2: item 6 desc 29 at (120,0) true {AER3} -> rank 1: all 100
#   K mean: R@1 75, R@2 100, R@1% 75, MRR 87.5
# Location Q: aerial AQ items 7, 8 desc 0, 100 at (0,0), (1000,0)
#   GQ: item 9 desc 90 at (1000,10) true {AQ1} -> rank 1
#       item 10 desc 60 at (0,0)    true {AQ0} -> ranks AQ1, AQ0 -> 2
#   Q mean: R@1 50, R@2 100, R@1% 50, MRR 75
CS_DESC = np.array([0, 10, 20, 30, 1, 16, 29, 0, 100, 90, 60], float)[:, None]


def _cs_sets():
    aer = _run("AER", [0, 1, 2, 3], [[0, 0], [40, 0], [80, 0], [120, 0]], [True] * 4)
    g1 = _run("G1", [4, 5], [[0, 0], [40, 5]], [True, True])
    g2 = _run("G2", [6], [[120, 0]], [True])
    aq = _run("AQ", [7, 8], [[0, 0], [1000, 0]])
    gq = _run("GQ", [9, 10], [[1000, 10], [0, 0]], [True, True])
    return {"K": CrossSourceSet([g1, g2], aer), "Q": CrossSourceSet([gq], aq)}


def test_cross_source_hand_computed_and_groups():
    res = evaluate_cross_source(
        DescriptorRetriever(CS_DESC),
        _cs_sets(),
        threshold=30.0,
        groups={"Baseline": ["K"], "Unseen": ["Q"]},
        k=2,
    )
    # aerial is_query is ignored and ground -> ground is never scored
    assert list(res.locations["K"].pairs) == [("G1", "AER"), ("G2", "AER")]
    assert list(res.locations["Q"].pairs) == [("GQ", "AQ")]
    k, q = res.locations["K"], res.locations["Q"]
    np.testing.assert_allclose(k.recall, [75, 100])
    assert (k.recall_1pct, k.mrr_hits, k.mrr) == pytest.approx((75.0, 87.5, 87.5))
    np.testing.assert_allclose(q.recall, [50, 100])
    assert res.groups["Baseline"].r1 == pytest.approx(75.0)
    assert res.groups["Unseen"].r1 == pytest.approx(50.0)
    assert res.r1 == pytest.approx(62.5) and res.mrr_hits == pytest.approx(81.25)
    assert json.loads(json.dumps(res.to_dict()))["groups"]["Unseen"]["locations"] == ["Q"]

    table = paper_table({"Toy": res}, group="Baseline")
    assert table.splitlines() == [
        "| Method | K AR@1 | K AR@1% | Mean AR@1 | Mean AR@1% |",
        "|--------|--------|---------|-----------|------------|",
        "| Toy    | 75.0   | 75.0    | 75.0      | 75.0       |",
    ]
    full = paper_table({"Toy": res, "Other": res}, metrics=["r1", "mrr_hits"], bold_best=True)
    assert full.splitlines()[0] == (
        "| Method | K AR@1   | K MRR    | Q AR@1   | Q MRR    | Mean AR@1 | Mean MRR |"
    )
    assert "| **62.5**  | **81.2** |" in full.splitlines()[2]
    with pytest.raises(ValueError, match="unknown group"):
        paper_table({"Toy": res}, group="Nope")
    with pytest.raises(ValueError, match="group"):
        evaluate_cross_source(DescriptorRetriever(CS_DESC), _cs_sets(), groups={"G": ["Z"]})


def test_markdown_table_formats_and_missing():
    t = markdown_table(
        [{"m": "a", "v": 1.234}, {"m": "bb", "v": float("nan")}, {"m": "c"}],
        [("m", "Method", None), ("v", "Value", ".2f")],
    )
    assert t.splitlines() == [
        "| Method | Value |",
        "|--------|-------|",
        "| a      | 1.23  |",
        "| bb     | —     |",
        "| c      | —     |",
    ]


# ---------------------------------------------------------------------- intra-sequence
#
# One sequence, items 0..5, t = 0, 50, ..., 250 s, exclusion 100 s, 3 m radius:
#   database of q: items with t < t_q - 100: q0-q2 {}, q3 {0}, q4 {0, 1}, q5 {0, 1, 2}
#   positions (0,0) (10,0) (20,0) (20,1) (0,1) (10,2); descriptors 0, 10, 20, 20.1, 1, 3
#   q3 is 1 m from item 2 (desc 20, the best match) but item 2 is inside the exclusion
#     window: q3 is not a revisit and retrieves item 0 at distance 20.1 (a FP when predicted)
#   q4: true {0}; ranks 0 (1.0), 1 -> correct top-1
#   q5: true {1}; ranks 0 (3.0), 1 (7), 2 -> wrong top-1, hit at rank 2
SEQ_DESC = np.array([0, 10, 20, 20.1, 1, 3], float)[:, None]
SEQ_POS = np.array([[0, 0], [10, 0], [20, 0], [20, 1], [0, 1], [10, 2]], float)
SEQ_T = np.arange(6) * 50.0


def test_intra_sequence_time_exclusion_and_f1_by_hand():
    res = evaluate_intra_sequence(
        DescriptorRetriever(SEQ_DESC), np.arange(6), SEQ_POS, SEQ_T, 3.0, 100.0, k=25
    )
    np.testing.assert_array_equal(res.retrieval.first_hit, [-1, -1, -1, -1, 1, 2])
    assert res.num_revisits == 2 and res.retrieval.num_skipped == 4
    assert res.r1 == 50.0 and res.retrieval.recall[1] == 100.0
    np.testing.assert_allclose(res.top1_distance, [np.inf, np.inf, np.inf, 20.1, 1.0, 3.0])
    # thresholds 1, 3, 20.1:
    #   t=1:    TP1 (q4) FP0 FN1 (q5)  -> P 1,   R 1/2 -> F1 2/3
    #   t=3:    TP1 FP1 (q5) FN0       -> P 1/2, R 1   -> F1 2/3
    #   t=20.1: TP1 FP2 (q3, q5) FN0   -> P 1/3, R 1   -> F1 1/2
    np.testing.assert_allclose(res.thresholds, [1.0, 3.0, 20.1])
    np.testing.assert_allclose(res.precision, [1, 1 / 2, 1 / 3])
    np.testing.assert_allclose(res.recall, [1 / 2, 1, 1])
    assert res.f1max == pytest.approx(2 / 3) and res.f1_threshold == pytest.approx(1.0)
    json.dumps(res.to_dict(curve=True), allow_nan=False)
    # without the exclusion window q3 retrieves item 2 (1 m away) and becomes a revisit
    res0 = evaluate_intra_sequence(
        DescriptorRetriever(SEQ_DESC), np.arange(6), SEQ_POS, SEQ_T, 3.0, 0.0, k=25
    )
    assert res0.retrieval.first_hit[3] == 1 and res0.top1_distance[3] == pytest.approx(0.1)


def test_intra_sequence_without_revisit_raises():
    with pytest.raises(EvaluationError, match=r"seq-7.*no evaluable query"):
        evaluate_intra_sequence(
            DescriptorRetriever(SEQ_DESC), np.arange(6), SEQ_POS, SEQ_T, 0.5, 100.0, name="seq-7"
        )


# ------------------------------------------------------------------------ loop closure
#
# 6 scans, t = 0..5 s, skip_time 1.5 s -> database of q_i: scans with t < i - 1.5
#   q2 {0}, q3 {0, 1}, q4 {0, 1, 2}, q5 {0, 1, 2, 3}; revisit radius 2 m.
#   square loop: (0,0) (10,0) (10,10) (0,10), then back at (0,1) [= scan 0] and (10,1) [= 1]
#   descriptors: (0,0) (4,0) (0,4) (3.7,0) (0.5,0) (4,0.8)
#   q2: top-1 scan 0 at 4.0, not a revisit          -> FP when predicted
#   q3: top-1 scan 1 at 0.3, not a revisit          -> FP when predicted
#   q4: true {0}, top-1 scan 0 at 0.5               -> TP
#   q5: true {1}, top-1 scan 1 at 0.8 (scan 3 at 0.854) -> TP
LC_DESC = np.array([[0, 0], [4, 0], [0, 4], [3.7, 0], [0.5, 0], [4, 0.8]], float)
LC_POS = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [0, 1], [10, 1]], float)
LC_T = np.arange(6, dtype=float)


def test_loop_closure_pr_by_hand():
    res = evaluate_loop_closure(
        DescriptorRetriever(LC_DESC), np.arange(6), LC_POS, LC_T, threshold=2.0, skip_time=1.5
    )
    assert res.retrieval.k == 1 and res.num_revisits == 2 and res.r1 == 100.0
    np.testing.assert_allclose(res.top1_distance, [np.inf, np.inf, 4.0, 0.3, 0.5, 0.8])
    np.testing.assert_array_equal(res.top1_correct, [False, False, False, False, True, True])
    # t=0.3: TP0 FP1 FN2 -> P 0,   R 0
    # t=0.5: TP1 FP1 FN1 -> P 1/2, R 1/2 -> F1 1/2
    # t=0.8: TP2 FP1 FN0 -> P 2/3, R 1   -> F1 4/5
    # t=4.0: TP2 FP2 FN0 -> P 1/2, R 1   -> F1 2/3
    np.testing.assert_allclose(res.thresholds, [0.3, 0.5, 0.8, 4.0])
    np.testing.assert_allclose(res.precision, [0, 1 / 2, 2 / 3, 1 / 2])
    np.testing.assert_allclose(res.recall, [0, 1 / 2, 1, 1])
    assert res.f1max == pytest.approx(0.8) and res.f1_threshold == pytest.approx(0.8)


class _L1PerQuery:
    """A non-descriptor retriever: L1 distance, one Python loop per query, honours exclude."""

    def __init__(self, desc, honour_exclude=True):
        self.desc, self.honour = desc, honour_exclude

    def rank(self, query, database, k, exclude=None):
        idx = np.full((len(query), k), -1, np.int64)
        dist = np.full((len(query), k), np.inf)
        for i, q in enumerate(query):
            d = np.abs(self.desc[database] - self.desc[q]).sum(axis=1)
            if exclude is not None and self.honour:
                d[exclude[i]] = np.inf
            order = np.argsort(d, kind="stable")[:k]
            order = order[np.isfinite(d[order])]
            idx[i, : order.size], dist[i, : order.size] = order, d[order]
        return Ranking(idx, dist)


def test_generic_retriever_matches_and_exclusion_is_checked():
    gen = _L1PerQuery(SEQ_DESC)
    assert isinstance(gen, Retriever)
    a = evaluate_intra_sequence(gen, np.arange(6), SEQ_POS, SEQ_T, 3.0, 100.0, k=3)
    b = evaluate_intra_sequence(DescriptorRetriever(SEQ_DESC), np.arange(6), SEQ_POS, SEQ_T,
                                3.0, 100.0, k=3)  # fmt: skip
    np.testing.assert_array_equal(a.retrieval.first_hit, b.retrieval.first_hit)
    np.testing.assert_allclose(a.top1_distance, b.top1_distance)
    assert a.f1max == pytest.approx(b.f1max)
    with pytest.raises(ValueError, match="excluded"):
        evaluate_loop_closure(_L1PerQuery(LC_DESC, False), np.arange(6), LC_POS, LC_T, 2.0, 1.5)


def test_online_chunks_give_the_same_result(monkeypatch):
    from hotformerloc.eval import protocols

    ref = evaluate_loop_closure(DescriptorRetriever(LC_DESC), np.arange(6), LC_POS, LC_T, 2.0, 1.5)
    monkeypatch.setattr(protocols, "_CHUNK_ELEMENTS", 7)  # one query per chunk
    res = evaluate_loop_closure(DescriptorRetriever(LC_DESC), np.arange(6), LC_POS, LC_T, 2.0, 1.5)
    np.testing.assert_array_equal(res.top1_distance, ref.top1_distance)
    assert res.f1max == ref.f1max
