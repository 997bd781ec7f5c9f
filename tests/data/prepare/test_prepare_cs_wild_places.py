"""CS-Wild-Places: test regions, the 30 m buffer (inclusive) around ground queries, 15/60 m
tuples across modalities, the cross-source evaluation, variants, and the real sample."""

import shutil

import numpy as np
import pytest
from prepare_fixtures import (
    CSWP_REGIONS,
    CSWP_UNSEEN_XY,
    CSWP_XY,
    E0,
    N0,
    cswp_stamps,
    eval_pickles,
    make_cs_wild_places,
    small_cloud,
    write_pcd,
    write_pickle,
    write_poses,
    write_regions,
)

from hotformerloc.data.prepare import PrepareError, PrepareOptions, check_dataset, prepare_dataset
from hotformerloc.data.prepare.cs_wild_places import read_submap
from hotformerloc.data.prepared import PreparedDataset
from hotformerloc.eval import DescriptorRetriever
from hotformerloc.eval.prepared import evaluate_prepared


def rel(forest, seq, k):
    n = len(CSWP_XY.get((forest, seq), CSWP_UNSEEN_XY.get((forest, seq), [])))
    return f"{forest}/{seq}/clouds/{cswp_stamps(seq, n)[k]}.pcd"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    base = tmp_path_factory.mktemp("cswp")
    root = make_cs_wild_places(base / "postproc_voxel_0.80m_rmground_normalised")
    regions = write_regions(base / "r.json", CSWP_REGIONS)
    m = prepare_dataset(
        "cs-wild-places",
        root,
        base / "out",
        PrepareOptions(subset="baseline", variant="normalised", regions=regions),
    )
    return root, regions, m, PreparedDataset.load(base / "out")


def test_splits_and_buffer_by_hand(baseline):
    _, _, _, ds = baseline
    split = {str(p): s for p, s in zip(ds.relpath, ds.split, strict=True)}
    k1 = [split[rel("Karawatha", "K-01_ground", k)] for k in range(4)]
    # (50,50) inside, (100,50) on the edge: queries; (130,50) exactly 30 m from a query:
    # buffer; (131,50): train
    assert k1 == ["test", "test", "buffer", "train"]
    assert [split[rel("Karawatha", "K-02_ground", k)] for k in range(2)] == ["train", "train"]
    # aerial: inside the region -> test; 22.4 m from a ground query -> buffer; else train
    ka = [split[rel("Karawatha", "Karawatha_aerial", k)] for k in range(4)]
    assert ka == ["test", "buffer", "train", "train"]
    assert ds.scale == 1.0 and ds.cloud_format == "pcd"


def test_tuples_across_modalities(baseline):
    _, _, m, ds = baseline
    local = {str(ds.relpath[r]): j for j, r in enumerate(ds.train_index)}
    d, e, f = (
        local[rel("Karawatha", s, k)]
        for s, k in (("K-01_ground", 3), ("K-02_ground", 0), ("K-02_ground", 1))
    )
    a2, a3 = (local[rel("Karawatha", "Karawatha_aerial", k)] for k in (2, 3))
    pos, nn = ds.tuples.positives, ds.tuples.non_negatives
    assert pos[d].tolist() == sorted([e, a2])  # 15 m ground and 15 m aerial
    assert pos[e].tolist() == [d] and pos[a2].tolist() == [d] and pos[a3].tolist() == []
    assert nn[d].tolist() == sorted([d, e, a2, a3])  # a3 exactly 60 m away
    assert nn[a2].tolist() == sorted([d, e, a2])  # a3 is 61.8 m away
    assert nn[f].tolist() == [f]
    assert m["tuples"]["pos_radius"] == 15.0 and m["tuples"]["neg_radius"] == 60.0


def test_cross_source_evaluation(baseline):
    _, _, m, ds = baseline
    ev = ds.evaluation
    assert ev.protocol == "cross_source" and ev.threshold == 30.0
    assert dict(ev.groups) == {"Baseline": ("karawatha", "venman")}
    kar = next(loc for loc in ev.locations if loc.name == "karawatha")
    assert [str(ds.relpath[i]) for i in kar.aerial.rows] == [
        rel("Karawatha", "Karawatha_aerial", k) for k in range(4)
    ]  # every aerial submap, whatever its split
    assert [r.queries.size for r in kar.runs] == [2, 0]
    assert m["counts"]["evaluation"]["karawatha"] == {"queries": 2, "runs": 2, "database": 4}
    res = evaluate_prepared(DescriptorRetriever(ds.xy), ds)
    assert set(res.groups) == {"Baseline"}
    pairs = res.locations["karawatha"].pairs
    assert list(pairs) == [("K-01_ground", "aerial")]  # ground -> ground is never scored
    assert res.r1 == 100.0


def test_unseen_whole_area_no_training(tmp_path):
    root = make_cs_wild_places(tmp_path / "n", layout=CSWP_UNSEEN_XY)
    prepare_dataset(
        "cs-wild-places",
        root,
        tmp_path / "out",
        PrepareOptions(subset="unseen", variant="normalised"),
    )
    ds = PreparedDataset.load(tmp_path / "out")
    assert len(ds.train_index) == 0 and (ds.split == "test").all()
    assert dict(ds.evaluation.groups) == {"Unseen": ("qcat", "samford")}
    q = {loc.name: loc.runs[0].queries.size for loc in ds.evaluation.locations}
    assert q == {"qcat": 2, "samford": 1}
    desc = ds.xy.copy()
    i = list(ds.relpath).index(rel("QCAT", "QCAT_aerial", 2))
    desc[i] = ds.xy[list(ds.relpath).index(rel("QCAT", "QCAT_ground", 1))]  # decoy 40 m away
    res = evaluate_prepared(DescriptorRetriever(desc), ds)
    # QCAT: (0,0) -> (0,5) rank 1; (40,0) -> decoy first, (40,20) second: AR@1 50
    assert res.locations["qcat"].r1 == 50.0 and res.locations["samford"].r1 == 100.0
    assert res.groups["Unseen"].r1 == 75.0


def test_missing_regions_and_wrong_variant(tmp_path):
    root = make_cs_wild_places(tmp_path / "n")
    with pytest.raises(PrepareError, match=r"karawatha.*--regions"):
        prepare_dataset(
            "cs-wild-places",
            root,
            tmp_path / "o",
            PrepareOptions(subset="baseline", variant="normalised"),
        )
    report = check_dataset("cs-wild-places", root, PrepareOptions(variant="metric"))
    assert any("this is the normalised variant" in f.message for f in report.errors)
    metric = make_cs_wild_places(tmp_path / "m", normalised=False)
    report = check_dataset("cs-wild-places", metric, PrepareOptions(variant="normalised"))
    assert any("points outside [-1, 1]" in f.message for f in report.errors)
    assert check_dataset("cs-wild-places", metric).detected["variant (data)"].startswith("metric")
    with pytest.raises(PrepareError, match="--set must be baseline or unseen"):
        prepare_dataset(
            "cs-wild-places",
            root,
            tmp_path / "o",
            PrepareOptions(subset="all", variant="normalised"),
        )


def test_real_submap_loads_with_its_pose(shared_data, tmp_path):
    sample = shared_data / "cs_wild_places_ground_submap_sample" / "karawatha_submap_gnd_2.pcd"
    if not sample.is_file():
        pytest.skip(f"{sample} is absent")
    pose = read_submap(sample).pose
    assert pose is not None
    root = tmp_path / "postproc_voxel_0.80m_rmground"
    stamp = "1624000000.000000"
    seq = root / "Karawatha" / "K-01_ground"
    (seq / "clouds").mkdir(parents=True)
    shutil.copyfile(sample, seq / "clouds" / f"{stamp}.pcd")
    tx, ty = pose[0, 3], pose[1, 3]
    write_poses(seq / "poses.csv", [stamp], [(tx, ty)])
    for forest, name, xy in (
        ("Karawatha", "Karawatha_aerial", (tx + 10, ty)),
        ("Venman", "V-01_ground", (E0, N0)),
        ("Venman", "Venman_aerial", (E0 + 5, N0)),
    ):
        write_pcd(root / forest / name / "clouds" / f"{stamp}.pcd", small_cloud(1, 25.0))
        write_poses(root / forest / name / "poses.csv", [stamp], [xy])
    regions = write_regions(
        tmp_path / "r.json",
        {
            "karawatha": {
                "polygons": [
                    {
                        "name": "K",
                        "vertices": [[tx - 50, ty - 50], [tx + 50, ty - 50], [tx, ty + 50]],
                    }
                ]
            },
            "venman": CSWP_REGIONS["venman"],
        },
    )
    report = check_dataset("cs-wild-places", root, PrepareOptions(variant="metric"))
    assert report.ok and not report.warnings  # VIEWPOINT agrees with poses.csv
    assert report.detected["variant (data)"].startswith("metric")
    prepare_dataset(
        "cs-wild-places",
        root,
        tmp_path / "out",
        PrepareOptions(subset="baseline", variant="metric", regions=regions),
    )
    ds = PreparedDataset.load(tmp_path / "out")
    i = list(ds.relpath).index(f"Karawatha/K-01_ground/clouds/{stamp}.pcd")
    np.testing.assert_allclose(ds.xy[i], [tx, ty])  # UTM zone 56S, from poses.csv
    assert (ds.world[i], ds.source[i], ds.split[i]) == ("karawatha", "ground", "test")
    cloud = ds.load_cloud(i)
    assert cloud.dtype == np.float32 and cloud.shape == (293_430, 3)
    assert ds.scale == pytest.approx(1 / 30)
    # a 5 m disagreement between poses.csv and VIEWPOINT is reported
    write_poses(seq / "poses.csv", [stamp], [(tx + 5, ty)])
    report = check_dataset("cs-wild-places", root, PrepareOptions(variant="metric"))
    assert any("VIEWPOINT is 5.0 m from" in f.message for f in report.warnings)


def test_queries_from_a_reference_pickle(baseline, tmp_path):
    root, _, _, ds = baseline
    kar = next(loc for loc in ds.evaluation.locations if loc.name == "karawatha")
    runs = [[(str(ds.relpath[i]), ds.xy[i, 1], ds.xy[i, 0]) for i in r.rows] for r in kar.runs]
    _, query = eval_pickles(runs, [[1], []], 30.0)  # only (100,50) of K-01 is a query
    pk = tmp_path / "pk"
    write_pickle(pk / "CSWildPlaces_Karawatha_evaluation_query.pickle", query)
    regions = write_regions(tmp_path / "r.json", {"venman": CSWP_REGIONS["venman"]})
    opts = PrepareOptions(subset="baseline", variant="normalised", regions=regions, pickles=pk)
    m = prepare_dataset("cs-wild-places", root, tmp_path / "out", opts)
    got = PreparedDataset.load(tmp_path / "out")
    kq = next(loc for loc in got.evaluation.locations if loc.name == "karawatha").runs[0].queries
    assert [str(got.relpath[i]) for i in kq] == [rel("Karawatha", "K-01_ground", 1)]
    split = {str(p): s for p, s in zip(got.relpath, got.split, strict=True)}
    # (50,50) is no query now but lies 50 m from one: train; (130,50) stays in the buffer
    assert split[rel("Karawatha", "K-01_ground", 0)] == "train"
    assert split[rel("Karawatha", "K-01_ground", 2)] == "buffer"
    assert any("aerial submaps inside the polygons" in f["message"] for f in m["findings"])
    write_pickle(pk / "Karawatha_evaluation_query_v2.pickle", query)  # now two files match
    report = check_dataset("cs-wild-places", root, opts)
    assert any("several files match" in f.message for f in report.errors)


def test_cli_subset_and_its_old_spelling(tmp_path):
    """`dataset prepare cs-wild-places --subset unseen`; the old `--set unseen` gives the
    same dataset (kept for one release)."""
    from cli_helpers import run_cli

    root = make_cs_wild_places(tmp_path / "n", layout=CSWP_UNSEEN_XY)
    outs = []
    for opt in ("--subset", "--set"):
        out = tmp_path / opt.strip("-")
        code, _, err = run_cli(
            "dataset",
            "prepare",
            "cs-wild-places",
            "--root",
            str(root),
            "--out",
            str(out),
            opt,
            "unseen",
        )
        assert code == 0, err
        outs.append(PreparedDataset.load(out))
    assert dict(outs[0].evaluation.groups) == {"Unseen": ("qcat", "samford")}
    assert list(outs[0].relpath) == list(outs[1].relpath)
    code, _, err = run_cli(
        "dataset",
        "prepare",
        "cs-wild-places",
        "--root",
        str(root),
        "--out",
        str(tmp_path / "x"),
        "--subset",
        "all",
    )
    assert code == 2 and "--subset must be baseline or unseen, got 'all'" in err
