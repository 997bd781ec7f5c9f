"""Readers of the reference's pickle schemas (through the restricted unpickler)."""

import numpy as np
import pytest
from prepare_fixtures import reference_classes, write_pickle

from hotformerloc.data.prepare.reference import (
    ReferencePickleError,
    read_eval_pickle,
    read_training_pickle,
    tuples_from_reference,
)


def test_eval_items_follow_their_integer_keys(tmp_path):
    run = {
        k: {"query": f"r/{k}.bin", "northing": np.float64(k), "easting": 2.0 * k, 0: [k]}
        for k in reversed(range(12))
    }
    (items,) = read_eval_pickle(write_pickle(tmp_path / "q.pickle", [run]))
    assert [it.path for it in items] == [f"r/{k}.bin" for k in range(12)]  # 10 after 9
    assert items[10].en == (20.0, 10.0) and items[10].neighbours[0].tolist() == [10]
    single = read_eval_pickle(write_pickle(tmp_path / "d.pickle", run))  # a dict = one run
    assert len(single) == 1 and len(single[0]) == 12


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ({0: {"query": "a"}, 2: {"query": "b"}}, "indices 0..1"),
        ({0: {"northing": 1.0}}, "expected a dict with a 'query' path"),
        ({0: {"query": "a", "northing": "x", "easting": 1.0}}, "'x' is not a number"),
    ],
)
def test_malformed_eval_pickles_name_file_and_item(tmp_path, run, message):
    path = write_pickle(tmp_path / "bad.pickle", [run])
    with pytest.raises(ReferencePickleError, match=message) as e:
        read_eval_pickle(path)
    assert str(path) in str(e.value)


def test_training_schemas_give_the_same_tuples(tmp_path):
    """TrainingTuple records, 6-tuples and PNV dicts with negatives: one set of tuples."""
    paths = ["a.bin", "b.bin", "c.bin"]
    pos = [[1], [0], []]
    nn = [[0, 1], [0, 1], [2]]
    with reference_classes() as TrainingTuple:
        records = {
            i: TrainingTuple(i, 0, p, np.array(pos[i]), np.array(nn[i]), np.zeros(2))
            for i, p in enumerate(paths)
        }
        write_pickle(tmp_path / "records.pickle", records)
    tuples6 = {i: (i, 0, p, pos[i], nn[i], [0.0, 0.0]) for i, p in enumerate(paths)}
    negatives = {0: [2], 1: [2], 2: [0, 1]}
    dicts = {
        i: {"query": p, "positives": pos[i], "negatives": negatives[i]} for i, p in enumerate(paths)
    }
    rows = np.array([7, 3, 5])  # our rows of a, b, c
    results = []
    for name, obj in (("t.pickle", tuples6), ("d.pickle", dicts)):
        write_pickle(tmp_path / name, obj)
    for name in ("records.pickle", "t.pickle", "d.pickle"):
        entries = read_training_pickle(tmp_path / name)
        results.append(tuples_from_reference(entries, rows))
    for train_index, t in results:
        assert train_index.tolist() == [3, 5, 7]  # local order = our row order: b, c, a
        assert [p.tolist() for p in t.positives] == [[2], [], [0]]
        assert [n.tolist() for n in t.non_negatives] == [[0, 2], [1], [0, 2]]


def test_training_entry_without_positives_is_refused(tmp_path):
    path = write_pickle(tmp_path / "t.pickle", {0: {"query": "a.bin"}})
    with pytest.raises(ReferencePickleError, match=r"entry 0: needs a path .* and 'positives'"):
        read_training_pickle(path)
    path = write_pickle(
        tmp_path / "u.pickle", {0: {"query": "a.bin", "positives": [5], "negatives": []}}
    )
    with pytest.raises(ReferencePickleError, match="unknown id 5"):
        tuples_from_reference(read_training_pickle(path), np.array([0]))
