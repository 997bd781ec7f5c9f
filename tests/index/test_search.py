"""Descriptor search: NumPy fallback == exact FAISS, approximate recall, filtered top-k."""

import math

import numpy as np
import pytest

from hotformerloc.eval.metrics import l2_ranking
from hotformerloc.index import search as search_mod
from hotformerloc.index.search import (
    EXACT_MAX_ENTRIES,
    Box,
    Circle,
    SearchError,
    SearchFilter,
    SearchIndex,
    choose_index,
)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_unit(n: int, d: int, seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, d)))


def clustered(n: int, d: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Database of ``n`` unit vectors around ``clusters`` centres, and 100 noisy queries."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    x = unit(centres[rng.integers(0, clusters, n)] + 0.25 * rng.standard_normal((n, d)))
    q = unit(x[rng.choice(n, 100, replace=False)] + 0.05 * rng.standard_normal((100, d)))
    return x, q


def brute_force(x: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray) -> np.ndarray:
    """Reference: float64 exact top-k over ``rows`` (global row ids)."""
    r = l2_ranking(q, x[rows], k)
    return np.where(r.indices >= 0, rows[np.maximum(r.indices, 0)], -1)


def test_numpy_fallback_equals_exact_faiss_and_the_float64_reference():
    x = random_unit(3000, 48, 0)
    q = random_unit(40, 48, 1)
    faiss_res = SearchIndex(x, "exact", "faiss").search(q, 10)
    numpy_res = SearchIndex(x, "exact", "numpy").search(q, 10)
    assert faiss_res.kind == numpy_res.kind == "exact"
    np.testing.assert_array_equal(numpy_res.indices, faiss_res.indices)
    np.testing.assert_allclose(numpy_res.distances, faiss_res.distances, atol=1e-5)
    ref = l2_ranking(q, x, 10)
    np.testing.assert_array_equal(numpy_res.indices, ref.indices)
    np.testing.assert_allclose(numpy_res.distances, ref.distances, atol=1e-5)
    # single query (D,) == row of the batch, for both backends
    for backend in ("faiss", "numpy"):
        one = SearchIndex(x, "exact", backend).search(q[3], 10)
        np.testing.assert_array_equal(one.indices[0], faiss_res.indices[3])


def test_distances_by_hand_ties_by_lower_row_and_padding():
    x = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)
    res = SearchIndex(x, "exact", "numpy").search(np.array([1.0, 0.0]), 6)
    np.testing.assert_array_equal(res.indices[0], [0, 1, 3, 2, -1, -1])
    np.testing.assert_allclose(res.distances[0, :4], [0, math.sqrt(2), math.sqrt(2), 2], atol=1e-6)
    assert np.isinf(res.distances[0, 4:]).all()
    faiss_res = SearchIndex(x, "exact", "faiss").search(np.array([1.0, 0.0]), 6)
    assert faiss_res.indices[0, 0] == 0 and faiss_res.indices[0, 3] == 2
    np.testing.assert_array_equal(faiss_res.indices[0, 4:], [-1, -1])
    np.testing.assert_allclose(faiss_res.distances[0, :4], res.distances[0, :4], atol=1e-6)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall_at_10_on_a_clustered_set(kind):
    x, q = clustered(4000, 64, 40, 2)
    exact = SearchIndex(x, "exact").search(q, 10).indices
    approx = SearchIndex(x, kind)
    assert approx.kind == kind
    got = approx.search(q, 10).indices
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact, strict=True)])
    assert recall >= 0.9, recall


@pytest.mark.parametrize(
    ("kind", "backend"), [("exact", "faiss"), ("exact", "numpy"), ("ivf", "faiss")]
)
def test_filtered_search_returns_the_true_filtered_top_k(kind, backend):
    x = random_unit(2000, 32, 3)
    q = random_unit(20, 32, 4)
    index = SearchIndex(x, kind, backend)
    # exclude each query's 50 nearest entries: top-k-then-filter would return nothing
    allowed = np.ones(len(x), bool)
    allowed[SearchIndex(x, "exact", "numpy").search(q, 50).indices.ravel()] = False
    allowed[::7] = False
    res = index.search(q, 10, allowed)
    want = brute_force(x, q, 10, np.flatnonzero(allowed))
    np.testing.assert_array_equal(res.indices, want)
    assert allowed[res.indices].all()
    # a filter passing 3 entries: those 3, then padding
    few = np.zeros(len(x), bool)
    few[[5, 900, 1999]] = True
    res = index.search(q[:2], 5, few)
    assert set(res.indices[0, :3]) == {5, 900, 1999} and (res.indices[:, 3:] == -1).all()
    np.testing.assert_array_equal(
        res.indices[:, :3], brute_force(x, q[:2], 3, np.array([5, 900, 1999]))
    )


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_large_filtered_approximate_search_uses_a_selector(monkeypatch, kind):
    """Above the exact threshold the approximate index runs with an ID selector: every hit
    passes the filter, and the filtered recall stays high."""
    monkeypatch.setattr(search_mod, "EXACT_MAX_ENTRIES", 100)
    x, q = clustered(3000, 32, 30, 5)
    allowed = np.arange(len(x)) % 3 != 0
    res = SearchIndex(x, kind).search(q, 10, allowed)
    assert allowed[res.indices].all()
    want = brute_force(x, q, 10, np.flatnonzero(allowed))
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.indices, want, strict=True)])
    assert recall >= 0.9, recall


def test_auto_threshold_and_numpy_backend_falls_back_to_exact():
    assert choose_index(EXACT_MAX_ENTRIES) == "exact"
    assert choose_index(EXACT_MAX_ENTRIES + 1) != "exact"
    x = random_unit(50, 8, 6)
    assert SearchIndex(x, "auto", "numpy").kind == "exact"
    with pytest.raises(SearchError, match="needs faiss"):
        SearchIndex(x, "hnsw", "numpy")


def test_regions_and_filter_mask_by_hand():
    xy = np.array([[0, 0], [3, 4], [5.1, 0], [np.nan, np.nan], [-2, 9]], float)
    np.testing.assert_array_equal(Circle(0, 0, 5).contains(xy), [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(Box(-2, 0, 3, 9).contains(xy), [1, 1, 0, 0, 1])
    source = np.array(["ground", "aerial", "aerial", "aerial", "ground"])
    world = np.array(["a", "a", "b", "a", "a"])
    seq = np.array(["s1", "s2", "s2", "s2", "s1"])
    f = SearchFilter(source="aerial", world=("a", "b"), region=Box(-10, -10, 10, 10))
    np.testing.assert_array_equal(f.mask(source, world, seq, xy), [0, 1, 1, 0, 0])
    assert SearchFilter().is_empty() and not f.is_empty()
    np.testing.assert_array_equal(
        SearchFilter(sequence="s1").mask(source, world, seq, xy), [1, 0, 0, 0, 1]
    )


def test_bad_input_is_a_clear_search_error():
    x = random_unit(10, 4, 7)
    index = SearchIndex(x, "exact")
    with pytest.raises(SearchError, match=r"shape \(Q, 4\)"):
        index.search(np.ones((2, 5), np.float32), 3)
    with pytest.raises(SearchError, match="NaN"):
        index.search(np.full(4, np.nan), 3)
    with pytest.raises(SearchError, match="k must be"):
        index.search(x[0], 0)
    with pytest.raises(SearchError, match="allowed"):
        index.search(x[0], 3, np.ones(3, bool))
    with pytest.raises(SearchError, match="unknown index kind"):
        SearchIndex(x, "lsh")
    with pytest.raises(SearchError, match="radius"):
        Circle(0, 0, -1)
    with pytest.raises(SearchError, match="box"):
        Box(1, 0, 0, 1)
    with pytest.raises(SearchError, match="unknown source 'satellite'"):
        SearchFilter(source=("aerial", "satellite"))
