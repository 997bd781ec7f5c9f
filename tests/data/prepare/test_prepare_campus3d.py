"""CS-Campus3D: rows, tuples and the aerial-only evaluation from the CrossLoc3D pickles."""

import numpy as np
import pytest
from prepare_fixtures import CAMPUS, make_campus3d, write_pickle

from hotformerloc.data.prepare import PrepareError, PrepareOptions, check_dataset, prepare_dataset
from hotformerloc.data.prepared import PreparedDataset
from hotformerloc.eval import DescriptorRetriever
from hotformerloc.eval.prepared import evaluate_prepared


@pytest.mark.parametrize("schema", ["v2", "crossloc3d"])
def test_campus3d_rows_tuples_and_protocol(tmp_path, schema):
    root = make_campus3d(tmp_path / "benchmark_datasets", schema)
    m = prepare_dataset("cs-campus3d", root, tmp_path / "out")  # pickles found in --root
    ds = PreparedDataset.load(tmp_path / "out")
    row = {str(p): i for i, p in enumerate(ds.relpath)}
    assert len(ds) == 6
    assert (
        ds.source[row[CAMPUS["a2"][0]]] == "aerial" and ds.source[row[CAMPUS["g1"][0]]] == "ground"
    )
    # positions: (easting, northing)
    np.testing.assert_array_equal(ds.xy[row[CAMPUS["a2"][0]]], [150.0, 50.0])
    assert ds.sequence[row[CAMPUS["g0"][0]]] == "umcp_lidar5_ground_umd_gps_1"
    # training: g2, a1, g0 in that id order; tuples from the pickle (hand-written)
    train = [str(ds.relpath[r]) for r in ds.train_index]
    assert sorted(train) == sorted(CAMPUS[n][0] for n in ("g2", "a1", "g0"))
    local = {p: j for j, p in enumerate(train)}
    g2, a1, g0 = (local[CAMPUS[n][0]] for n in ("g2", "a1", "g0"))
    assert ds.tuples.positives[a1].tolist() == [g0] and ds.tuples.positives[g0].tolist() == [a1]
    assert ds.tuples.non_negatives[g2].tolist() == [g2]
    assert ds.tuples.non_negatives[a1].tolist() == sorted([a1, g0])
    assert (ds.split[ds.train_index] == "train").all() and (ds.split == "train").sum() == 3
    (loc,) = ds.evaluation.locations
    assert ds.evaluation.threshold == 100.0 and ds.evaluation.skip_same_run is False
    assert loc.database_runs == ("database_1",)
    # descriptors = positions: g0 -> a0 (exactly 100 m) and g1 -> a2 / a0 (50 m)
    res = evaluate_prepared(DescriptorRetriever(ds.xy), ds)
    pairs = res.locations["campus3d"].pairs
    assert list(pairs) == [("query_0", "database_1")]  # only the aerial-only database
    assert pairs[("query_0", "database_1")].num_queries == 2 and res.r1 == 100.0
    assert [c["neighbours_differ"] for c in m["reference_check"]] == [0]


def test_campus3d_pickles_are_required(tmp_path):
    root = tmp_path / "bd"
    root.mkdir()
    report = check_dataset("cs-campus3d", root)
    assert not report.ok
    assert "training_queries_umd_4096_v2.pickle" in report.errors[0].message
    with pytest.raises(PrepareError, match=r"umd_evaluation_database\.pickle"):
        prepare_dataset("cs-campus3d", root, tmp_path / "out")


def test_campus3d_single_database_is_an_error(tmp_path):
    root = make_campus3d(tmp_path / "bd")
    write_pickle(root / "umd_evaluation_database.pickle", [{}])
    report = check_dataset("cs-campus3d", root)
    assert any("database index 1" in f.message for f in report.errors)


def test_campus3d_explicit_pickle_file_and_unknown_path(tmp_path):
    root = make_campus3d(tmp_path / "bd")
    bad = {0: {"query": "umd/nowhere/x/1.bin", "northing": 0.0, "easting": 0.0}}
    write_pickle(tmp_path / "q.pickle", [bad])
    opts = PrepareOptions(pickle_files={"campus3d.query": tmp_path / "q.pickle"}, pickles=root)
    report = check_dataset("cs-campus3d", root, opts)
    assert any("umd/nowhere/x/1.bin: missing cloud file" in f.message for f in report.errors)
