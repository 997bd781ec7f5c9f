"""Metrics of the evaluation harness: L2 ranking, true neighbours, recall / MRR, F1max."""

import json

import numpy as np
import pytest

from hotformerloc.eval import metrics
from hotformerloc.eval.metrics import (
    EvaluationError,
    Ranking,
    f1_max,
    l2_ranking,
    one_percent_threshold,
    pr_curve,
    recall_metrics,
    true_neighbours,
)

# ----------------------------------------------------------------------------- l2_ranking


def _brute(q, db, k):
    d = np.linalg.norm(q[:, None, :] - db[None, :, :], axis=2)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


@pytest.mark.parametrize("chunk", [1 << 22, 97])  # 97: several query chunks
def test_l2_ranking_matches_brute_force(monkeypatch, chunk):
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(0)
    q = rng.normal(size=(30, 8)).astype(np.float32)
    db = rng.normal(size=(200, 8)).astype(np.float32)
    r = l2_ranking(q, db, k=25)
    ref_i, ref_d = _brute(q.astype(np.float64), db.astype(np.float64), 25)
    assert r.indices.dtype == np.int64 and r.distances.dtype == np.float64
    np.testing.assert_array_equal(r.indices, ref_i)
    np.testing.assert_allclose(r.distances, ref_d, rtol=1e-9, atol=1e-9)


def test_l2_ranking_ties_lower_index_first():
    # integer descriptors: distances are exact, so these are true ties
    db = np.array([[1.0], [1.0], [1.0], [1.0], [0.0]])
    r = l2_ranking(np.array([[0.0]]), db, k=3)
    # item 4 at distance 0, then the tie at distance 1 is cut at k: items 0, 1 (not 2, 3)
    np.testing.assert_array_equal(r.indices, [[4, 0, 1]])
    np.testing.assert_array_equal(r.distances, [[0.0, 1.0, 1.0]])
    db2 = np.array([[5.0], [2.0], [2.0], [4.0], [2.0]])
    r2 = l2_ranking(np.array([[2.0], [3.0]]), db2, k=5)
    np.testing.assert_array_equal(r2.indices, [[1, 2, 4, 3, 0], [1, 2, 3, 4, 0]])


def test_l2_ranking_exclude_and_padding():
    db = np.array([[0.0], [1.0], [2.0]])
    q = np.array([[0.0], [0.0], [0.0]])
    ex = np.array([[True, False, False], [True, True, True], [False, False, False]])
    r = l2_ranking(q, db, k=5, exclude=ex)
    np.testing.assert_array_equal(
        r.indices, [[1, 2, -1, -1, -1], [-1, -1, -1, -1, -1], [0, 1, 2, -1, -1]]
    )
    np.testing.assert_array_equal(r.distances[0], [1.0, 2.0, np.inf, np.inf, np.inf])
    assert np.isinf(r.distances[1]).all()
    empty = l2_ranking(q, np.empty((0, 1)), k=2)
    assert empty.indices.shape == (3, 2) and (empty.indices == -1).all()
    with pytest.raises(ValueError, match="exclude"):
        l2_ranking(q, db, k=2, exclude=np.zeros((3, 2), bool))
    with pytest.raises(ValueError, match="NaN"):
        l2_ranking(np.array([[np.nan]]), db)


# ------------------------------------------------------------------------ true_neighbours


def test_true_neighbours_inclusive_sorted():
    db = np.array([[3.0, 0.0], [0.0, 3.0000001], [0.1, 0.2], [-3.0, 0.0]])
    nb = true_neighbours(np.array([[0.0, 0.0], [100.0, 100.0]]), db, 3.0)
    np.testing.assert_array_equal(nb[0], [0, 2, 3])  # exactly 3 m is in, 3.0000001 is out
    assert nb[0].dtype == np.int64 and nb[1].size == 0
    assert true_neighbours(np.zeros((2, 3)), np.empty((0, 3)), 1.0)[1].size == 0
    with pytest.raises(ValueError, match="columns"):
        true_neighbours(np.zeros((1, 2)), np.zeros((1, 3)), 1.0)


# ------------------------------------------------------------------------- recall_metrics


def _toy():
    """1-D descriptors and positions with hand-known true neighbours (radius 10 m)."""
    db = np.array([[0.0], [10.0], [20.0], [30.0], [40.0]])
    db_pos = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0], [300.0, 0.0], [400.0, 0.0]])
    q = np.array([[1.0], [12.0], [26.0], [5.0]])
    q_pos = np.array([[0.0, 5.0], [203.0, 0.0], [0.0, 3.0], [1000.0, 1000.0]])
    return q, db, true_neighbours(q_pos, db_pos, 10.0)


def test_recall_metrics_hand_computed_k3():
    q, db, pos = _toy()
    # q0 (1):  ranks 0,1,2         true {0} -> rank 1
    # q1 (12): ranks 1,2,0         true {2} -> rank 2
    # q2 (26): ranks 3,2,4 (,1,0)  true {0} -> miss in top 3
    # q3: no true neighbour -> skipped
    r = recall_metrics(l2_ranking(q, db, k=3), pos, db_size=5)
    np.testing.assert_array_equal(r.first_hit, [1, 2, 0, -1])
    assert (r.num_queries, r.num_skipped) == (3, 1)
    np.testing.assert_allclose(r.recall, [100 / 3, 200 / 3, 200 / 3])
    assert r.r1 == pytest.approx(100 / 3)
    assert r.n_1pct == 1 and r.recall_1pct == pytest.approx(100 / 3)
    assert r.mrr_hits == pytest.approx(100 * (1 + 0.5) / 2)  # 75: hits only
    assert r.mrr == pytest.approx(100 * (1 + 0.5 + 0) / 3)  # 50: misses count 0
    d = json.loads(json.dumps(r.to_dict(per_query=True), allow_nan=False))
    assert d["first_hit"] == [1, 2, 0, -1] and d["mrr"] == pytest.approx(50.0)


def test_recall_metrics_hand_computed_k5():
    q, db, pos = _toy()
    r = recall_metrics(l2_ranking(q, db, k=5), pos, db_size=5)
    # q2's true neighbour (item 0) is now found at rank 5
    np.testing.assert_array_equal(r.first_hit, [1, 2, 5, -1])
    np.testing.assert_allclose(r.recall, [100 / 3, 200 / 3, 200 / 3, 200 / 3, 100.0])
    assert r.mrr_hits == pytest.approx(100 * (1 + 0.5 + 0.2) / 3)
    assert r.mrr == pytest.approx(r.mrr_hits)


def test_recall_metrics_several_positives_and_padding():
    # row 0: positives {7, 3}; 3 comes first at rank 2. row 1: padding -1 is never a hit
    rk = Ranking(np.array([[5, 3, 7], [2, -1, -1]]), np.array([[0, 1, 2], [0, np.inf, np.inf]]))
    r = recall_metrics(rk, [np.array([7, 3]), np.array([4])], db_size=8)
    np.testing.assert_array_equal(r.first_hit, [2, 0])
    np.testing.assert_allclose(r.recall, [0.0, 50.0, 50.0])
    assert r.mrr_hits == pytest.approx(50.0) and r.mrr == pytest.approx(25.0)


def test_one_percent_threshold_python_round():
    # Python rounds halves to even: round(2.5) == 2, round(3.5) == 4
    assert [one_percent_threshold(n) for n in (0, 49, 51, 149, 150, 250, 350, 10000)] == [
        1, 1, 1, 1, 2, 2, 4, 100,
    ]  # fmt: skip


def test_recall_1pct_cutoff_and_truncation():
    # first hits at ranks 2, 3 and a miss (K = 5)
    rk = Ranking(np.array([[9, 0, 8, 8, 8], [9, 9, 1, 9, 9], [9, 9, 9, 9, 9]]), np.zeros((3, 5)))
    pos = [np.array([0]), np.array([1]), np.array([2])]
    r250 = recall_metrics(rk, pos, db_size=250)  # cut = round(2.5) = 2 -> only the rank-2 hit
    assert r250.n_1pct == 2 and r250.recall_1pct == pytest.approx(100 / 3)
    r350 = recall_metrics(rk, pos, db_size=350)  # cut = 4 -> ranks 2 and 3
    assert r350.recall_1pct == pytest.approx(200 / 3)
    r10k = recall_metrics(rk, pos, db_size=10000)  # cut 100 > K: truncated to K like the reference
    assert r10k.n_1pct == 100 and r10k.recall_1pct == pytest.approx(200 / 3)


def test_recall_metrics_no_evaluable_query_raises():
    rk = Ranking(np.array([[0], [1]]), np.zeros((2, 1)))
    with pytest.raises(EvaluationError, match=r"my set.*no evaluable query.*2 queries"):
        recall_metrics(rk, [np.array([], int), np.array([], int)], db_size=2, name="my set")
    assert issubclass(EvaluationError, ValueError)
    with pytest.raises(ValueError, match="positive lists"):
        recall_metrics(rk, [np.array([0])], db_size=2)


# --------------------------------------------------------------------------------- f1_max


def test_f1_max_hand_computed():
    # q0: no candidate; q1: correct @0.5; q2: revisit but wrong @1.5; q3: non-revisit @0.2
    scores = np.array([np.inf, 0.5, 1.5, 0.2])
    pos = np.array([False, True, False, False])
    rev = np.array([True, True, True, False])
    thr, p, r = pr_curve(scores, pos, rev)
    np.testing.assert_allclose(thr, [0.2, 0.5, 1.5])
    # t=0.2: TP0 FP1 FN3 -> P 0, R 0
    # t=0.5: TP1 FP1 FN2 (q0, q2) -> P 1/2, R 1/3 -> F1 0.4
    # t=1.5: TP1 FP2 FN1 (q0)     -> P 1/3, R 1/2 -> F1 0.4
    np.testing.assert_allclose(p, [0.0, 0.5, 1 / 3])
    np.testing.assert_allclose(r, [0.0, 1 / 3, 0.5])
    f1, t, p2, r2 = f1_max(scores, pos, rev)
    assert f1 == pytest.approx(0.4) and t == 0.5  # smallest threshold of the tie
    np.testing.assert_array_equal(p2, p)
    np.testing.assert_array_equal(r2, r)
    # strict convention: the wrong loop of q2 is also a FN -> recall = TP / 3 revisits
    f1s, ts, _, rs = f1_max(scores, pos, rev, wrong_loop_is_fn=True)
    np.testing.assert_allclose(rs, [0.0, 1 / 3, 1 / 3])
    assert f1s == pytest.approx(0.4) and ts == 0.5


def test_f1_max_edge_cases():
    f1, t, p, r = f1_max(np.array([np.inf, np.nan]), np.zeros(2, bool), np.ones(2, bool))
    assert f1 == 0.0 and np.isnan(t) and p.size == 0 and r.size == 0
    with pytest.raises(ValueError, match="implies"):
        f1_max(np.array([1.0]), np.array([True]), np.array([False]))
