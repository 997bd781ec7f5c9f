"""PairBatchSampler: pairs are positives, forced repeats only, determinism, partial batch."""

from __future__ import annotations

import numpy as np
import pytest

from hotformerloc.data import PairBatchSampler, Tuples, build_tuples


def chain_tuples(n: int = 61, isolated: int = 7) -> Tuples:
    """``n`` elements 1 m apart on a line (positives within 1.5 m: 1-2 each, so repeats are
    sometimes forced), then ``isolated`` elements without positives."""
    xy = np.zeros((n + isolated, 2))
    xy[:n, 0] = np.arange(n)
    xy[n:, 0] = 1000 + 100 * np.arange(isolated)
    return build_tuples(xy, np.zeros(n + isolated), 1.5, 3.0)


def pairs_tuples(pairs: int) -> Tuples:
    """``pairs`` disjoint pairs, each element the only positive of the other."""
    pos = [np.array([i ^ 1]) for i in range(2 * pairs)]
    return Tuples(
        positives=pos, non_negatives=[np.array(sorted({i, i ^ 1})) for i in range(2 * pairs)]
    )


def test_pairs_are_positives_and_repeats_only_when_forced() -> None:
    t = chain_tuples()
    s = PairBatchSampler(t, batch_size=8, seed=1)
    forced = 0
    for epoch in range(4):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s) > 0
        used: set[int] = set()
        for b in batches:
            assert all(isinstance(i, int) for i in b)
            assert len(b) == 8 or (b is batches[-1] and 4 <= len(b) < 8 and len(b) % 2 == 0)
            for e, p in zip(b[::2], b[1::2], strict=True):
                assert p in t.positives[e]
                assert e not in used  # the first of a pair is always unused
                used.add(e)
                if p in used:  # a used positive only when every positive was used
                    assert set(t.positives[e].tolist()) <= used
                    forced += 1
                used.add(p)
        assert not used & set(range(61, 68))  # elements without positives never sampled
    assert forced > 0  # the chain does force some repeats


def test_determinism_per_seed_and_epoch() -> None:
    t = chain_tuples()
    a, b = PairBatchSampler(t, 8, seed=5), PairBatchSampler(t, 8, seed=5)
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    first = list(a)
    a.set_epoch(4)
    assert list(a) != first
    a.set_epoch(3)
    assert list(a) == first
    assert list(PairBatchSampler(t, 8, seed=6)) != list(PairBatchSampler(t, 8, seed=5))


def test_start_resumes_an_epoch() -> None:
    s = PairBatchSampler(chain_tuples(), 8, seed=0)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=3)
    assert len(s) == len(full) - 3 and list(s) == full[3:]


@pytest.mark.parametrize(
    ("pairs", "drop_small", "sizes"),
    [(10, 4, [8, 8, 4]), (9, 4, [8, 8]), (9, 2, [8, 8, 2]), (8, 4, [8, 8]), (11, 4, [8, 8, 6])],
)
def test_final_partial_batch(pairs: int, drop_small: int, sizes: list[int]) -> None:
    s = PairBatchSampler(pairs_tuples(pairs), 8, seed=0, drop_small=drop_small)
    batches = list(s)
    assert [len(b) for b in batches] == sizes
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == len(flat)  # disjoint pairs: no repeat is ever forced


def test_bad_arguments() -> None:
    t = pairs_tuples(4)
    for bs in (2, 7, 0):
        with pytest.raises(ValueError, match="even int >= 4"):
            PairBatchSampler(t, bs, seed=0)
    with pytest.raises(ValueError, match="drop_small"):
        PairBatchSampler(t, 8, seed=0, drop_small=1)
    lonely = Tuples([np.zeros(0, np.int64)] * 3, [np.array([i]) for i in range(3)])
    with pytest.raises(ValueError, match="no training element has a positive"):
        PairBatchSampler(lonely, 4, seed=0)


def test_group_batches_hold_one_group_and_one_group_is_the_plain_sampler() -> None:
    n = 80
    xy = np.zeros((n, 2))
    xy[:, 0] = np.arange(n) % 40  # two groups on the same coordinates
    groups = np.array(["a"] * 40 + ["b"] * 40)
    t = build_tuples(xy, groups, 1.5, 3.0)
    s = PairBatchSampler(t, 8, seed=2, groups=groups)
    batches = s.batches(0)
    assert set().union(*batches) == set(range(n))  # every element drawn (repeats allowed)
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    assert {groups[b[0]] for b in batches} == {"a", "b"}
    plain = PairBatchSampler(t, 8, seed=2)
    assert any(len({groups[i] for i in b}) == 2 for b in plain.batches(0))  # mixed without
    one = PairBatchSampler(t, 8, seed=2, groups=np.zeros(n))
    assert one.batches(0) == plain.batches(0)
    with pytest.raises(ValueError, match="labels"):
        PairBatchSampler(t, 8, seed=2, groups=np.zeros(3))


def test_cross_source_pairs() -> None:
    """Two interleaved sources on a grid: with cross_source 1 every partner of an element
    that has a positive of the other source is of the other source; 0 is the default."""
    xy = np.stack(np.meshgrid(np.arange(12.0), np.arange(12.0)), -1).reshape(-1, 2)
    sources = np.where(np.arange(len(xy)) % 5 == 0, "aerial", "ground")
    t = build_tuples(xy, np.zeros(len(xy)), 1.5, 3.0)
    plain = PairBatchSampler(t, batch_size=8, seed=3)
    zero = PairBatchSampler(t, batch_size=8, seed=3, sources=sources, cross_source=0.0)
    assert plain.batches(0) == zero.batches(0)
    counts = []
    for p in (0.0, 1.0):
        s = PairBatchSampler(t, batch_size=8, seed=3, sources=sources, cross_source=p)
        cross = 0
        for b in s.batches(0):
            for e, o in zip(b[::2], b[1::2], strict=True):
                assert o in t.positives[e]
                has_cross = (sources[t.positives[e]] != sources[e]).any()
                if p == 1.0 and has_cross:
                    assert sources[o] != sources[e]
                cross += sources[o] != sources[e]
        counts.append(cross)
    assert counts[1] > 1.5 * counts[0]
    with pytest.raises(ValueError, match="cross_source"):
        PairBatchSampler(t, batch_size=8, seed=3, cross_source=0.5)
    with pytest.raises(ValueError, match="cross_source"):
        PairBatchSampler(t, batch_size=8, seed=3, sources=sources, cross_source=2.0)
