"""Wild-Places: release detection, the pose timestamp fix of the .pcd release, splits with
polygons and buffer circles (boundaries included), tuples and inter-sequence evaluation."""

import numpy as np
import pytest
from prepare_fixtures import (
    WP_REGIONS,
    eval_pickles,
    make_wild_places,
    reference_classes,
    small_cloud,
    wp_seed,
    wp_stamps,
    write_pickle,
    write_regions,
)

from hotformerloc.data.prepare import PrepareError, PrepareOptions, check_dataset, prepare_dataset
from hotformerloc.data.prepared import PreparedDataset
from hotformerloc.eval import DescriptorRetriever
from hotformerloc.eval.prepared import evaluate_prepared


def rel(forest, seq, k, n=10, ext="pcd"):
    return f"{forest}/{seq}/Clouds_downsampled/{wp_stamps(forest, seq, n)[k]}.{ext}"


@pytest.fixture(scope="module")
def wp(tmp_path_factory):
    base = tmp_path_factory.mktemp("wp")
    root = make_wild_places(base / "data")
    regions = write_regions(base / "regions.json", WP_REGIONS)
    out = base / "out"
    m = prepare_dataset("wild-places", root, out, PrepareOptions(release="pcd", regions=regions))
    return root, regions, m, PreparedDataset.load(out)


def test_release_is_detected_but_never_guessed(tmp_path):
    root = make_wild_places(tmp_path / "data")
    report = check_dataset("wild-places", root)
    assert report.detected["release"].startswith("pcd")
    assert any("sorted file order" in f.message for f in report.findings)
    with pytest.raises(PrepareError, match=r"--release pcd.*--release v3.*looks like: pcd"):
        prepare_dataset("wild-places", root, tmp_path / "out")
    with pytest.raises(PrepareError, match="holds pcd clouds, not v3"):
        prepare_dataset("wild-places", root, tmp_path / "out", PrepareOptions(release="v3"))
    assert not (tmp_path / "out").exists()


def test_splits_with_polygon_and_circle_boundaries(wp):
    _, _, _, ds = wp
    split = {str(p): s for p, s in zip(ds.relpath, ds.split, strict=True)}
    v1 = [split[rel("Venman", "V-01", k, 4)] for k in range(4)]
    # (50,50) inside; (100,50) on the polygon edge (closed); (170,50) exactly 30 m from the
    # circle centre (closed); (169,50) 31 m away
    assert v1 == ["test", "test", "buffer", "train"]
    assert [split[rel("Venman", "V-02", k, 3)] for k in range(3)] == ["train", "test", "train"]
    # K-01: (10,10) inside the triangle, (30,30) on its hypotenuse, (31,30) outside
    assert [split[rel("Karawatha", "K-01", k, 3)] for k in range(3)] == ["test", "test", "train"]
    # sequences 03 and 04 are never trained on
    assert split[rel("Venman", "V-03", 1, 2)] == "test"
    assert ds.cloud_format == "pcd" and ds.scale == pytest.approx(1 / 30)


def test_tuples_per_forest_by_hand(wp):
    _, _, m, ds = wp
    local = {str(ds.relpath[r]): j for j, r in enumerate(ds.train_index)}
    v13, v20, v22 = (
        local[rel("Venman", "V-01", 3, 4)],
        local[rel("Venman", "V-02", 0, 3)],
        local[rel("Venman", "V-02", 2, 3)],
    )
    k12, k20 = local[rel("Karawatha", "K-01", 2, 3)], local[rel("Karawatha", "K-02", 0, 1)]
    assert len(ds.train_index) == 5
    pos, nn = ds.tuples.positives, ds.tuples.non_negatives
    assert pos[v13].tolist() == [v20] and pos[v20].tolist() == [v13]  # exactly 3 m
    assert pos[k12].tolist() == [k20] and pos[v22].tolist() == []
    assert nn[v20].tolist() == sorted([v13, v20, v22])  # (116,50) exactly 50 m away
    assert nn[v13].tolist() == sorted([v13, v20])  # (116,50) is 53 m away
    # forests never mix, whatever their coordinates
    assert not set(nn[k12].tolist()) & {v13, v20, v22}
    assert m["tuples"]["pos_radius"] == 3.0 and m["tuples"]["neg_radius"] == 50.0


def test_pose_timestamp_fix_assigns_poses_by_file_order(wp):
    _, _, _, ds = wp
    i = list(ds.relpath).index(rel("Venman", "V-01", 2, 4))
    np.testing.assert_array_equal(ds.xy[i], [170.0, 50.0])
    assert ds.timestamp[i] == float(wp_stamps("Venman", "V-01", 4)[2])  # the file name


def test_inter_sequence_protocol(wp):
    _, _, _, ds = wp
    assert ds.evaluation.protocol == "wild_places_inter" and ds.evaluation.threshold == 3.0
    locs = {loc.name: loc for loc in ds.evaluation.locations}
    assert [r.name for r in locs["venman"].runs] == ["V-01", "V-02", "V-03", "V-04"]
    nq = {r.name: r.queries.size for r in locs["venman"].runs}
    assert nq == {"V-01": 2, "V-02": 1, "V-03": 1, "V-04": 1}
    assert [r.queries.size for r in locs["karawatha"].runs] == [2, 0, 1, 1]
    res = evaluate_prepared(DescriptorRetriever(ds.xy), ds)
    ven = res.locations["venman"].pairs
    # V-01's queries against V-03: (50,50) has (52,50) within 3 m, (100,50) has nothing
    assert ven[("V-01", "V-03")].num_queries == 1 and ven[("V-01", "V-03")].num_skipped == 1
    assert ("V-01", "V-02") in ven and ("V-02", "V-02") not in ven
    assert res.r1 == 100.0  # positions as descriptors are an oracle


def test_pickles_define_the_sets_without_regions(wp, tmp_path):
    root, _, _, ds = wp
    pk = tmp_path / "pk"
    with reference_classes() as TrainingTuple:
        entries = {}
        for j, r in enumerate(ds.train_index[:4]):  # the reference drops one (our last)
            entries[j] = TrainingTuple(
                j, 0, str(ds.relpath[r]), np.array([], np.int64), np.array([j]), np.zeros(2)
            )
        write_pickle(pk / "training_wild-places.pickle", entries)
    for forest, loc in (("Venman", "venman"), ("Karawatha", "karawatha")):
        spec = next(x for x in ds.evaluation.locations if x.name == loc)
        runs = [[(str(ds.relpath[i]), ds.xy[i, 1], ds.xy[i, 0]) for i in r.rows] for r in spec.runs]
        q = [[int(np.flatnonzero(r.rows == x)[0]) for x in r.queries] for r in spec.runs]
        q[0] = q[0][:1]
        _, query = eval_pickles(runs, q, 3.0)
        write_pickle(pk / f"{forest}_evaluation_query.pickle", query)
    opts = PrepareOptions(release="pcd", pickles=pk)
    m = prepare_dataset("wild-places", root, tmp_path / "out", opts)
    got = PreparedDataset.load(tmp_path / "out")
    assert got.train_index.tolist() == ds.train_index[:4].tolist()
    assert got.tuples.non_negatives[0].tolist() == [0]  # the reference's tuples
    ven = next(x for x in got.evaluation.locations if x.name == "venman")
    assert [r.queries.size for r in ven.runs] == [1, 1, 1, 1]
    assert m["regions"]["venman"] == "reference pickles"
    dropped = ds.train_index[4]
    assert got.split[dropped] == "buffer"  # not trained on by the reference


def test_v3_release(tmp_path):
    root = make_wild_places(tmp_path / "data", release="v3")
    assert check_dataset("wild-places", root).detected["release"].startswith("v3")
    regions = write_regions(tmp_path / "r.json", WP_REGIONS)
    prepare_dataset(
        "wild-places", root, tmp_path / "out", PrepareOptions(release="v3", regions=regions)
    )
    ds = PreparedDataset.load(tmp_path / "out")
    assert ds.cloud_format == "kitti" and len(ds) == 17
    i = list(ds.relpath).index(rel("Karawatha", "K-02", 0, 1, "bin"))
    cloud = ds.load_cloud(i)
    assert cloud.dtype == np.float32 and cloud.shape == (64, 3)
    np.testing.assert_array_equal(cloud, small_cloud(wp_seed("Karawatha", "K-02", 0)))


def test_pose_count_mismatch_is_reported(tmp_path):
    root = make_wild_places(tmp_path / "data")
    poses = root / "Venman" / "V-02" / "poses_aligned.csv"
    poses.write_text(poses.read_text() + "1624099999.0,1,2,0,0,0,0,1\n")
    report = check_dataset("wild-places", root)
    assert any("4 poses in poses_aligned.csv but 3 clouds" in f.message for f in report.errors)
    with pytest.raises(PrepareError, match=r"4 poses in poses_aligned\.csv but 3 clouds"):
        prepare_dataset("wild-places", root, tmp_path / "out", PrepareOptions(release="pcd"))
