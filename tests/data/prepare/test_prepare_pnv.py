"""Oxford and In-house (PointNetVLAD benchmark): splits, tuples and evaluation sets against
values worked out by hand for tiny fixtures in the benchmark's exact on-disk format."""

import json

import numpy as np
import pytest
from prepare_fixtures import (
    IH,
    INHOUSE_RUNS,
    OX_EVAL,
    OX_EVAL_RUNS,
    OX_TRAIN,
    OXFORD_RUNS,
    eval_pickles,
    make_inhouse,
    make_oxford,
    oxford_regions,
    reference_classes,
    write_pickle,
    write_regions,
)

from hotformerloc.data.prepare import PrepareError, PrepareOptions, check_dataset, prepare_dataset
from hotformerloc.data.prepared import PreparedDataset
from hotformerloc.eval import DescriptorRetriever
from hotformerloc.eval.prepared import evaluate_prepared

T0 = 1400000000000000


def rel(run_index, k, kind=OX_TRAIN):
    return f"oxford/{OXFORD_RUNS[run_index]}/{kind[0]}/{T0 + 1000 * k}.bin"


@pytest.fixture(scope="module")
def oxford(tmp_path_factory):
    base = tmp_path_factory.mktemp("ox")
    root = make_oxford(base / "benchmark_datasets")
    regions = oxford_regions(base / "regions.json")
    out = base / "prepared"
    manifest = prepare_dataset("oxford", root, out, PrepareOptions(regions=regions))
    return root, out, manifest, PreparedDataset.load(out)


def test_oxford_training_split_and_tuples_by_hand(oxford):
    _, _, manifest, ds = oxford
    train = {str(ds.relpath[r]): j for j, r in enumerate(ds.train_index)}
    # run 0: (1000,1000) and (1149,1000) lie inside the open square, (1150,1000) on its edge
    assert ds.split[list(ds.relpath).index(rel(0, 0))] == "test"
    assert ds.split[list(ds.relpath).index(rel(0, 1))] == "test"
    a2, a3, a4, a5, b0 = (
        train[rel(0, 2)],
        train[rel(0, 3)],
        train[rel(0, 4)],
        train[rel(0, 5)],
        train[rel(1, 0)],
    )
    # 44 training runs (all but the last): run 0 gives 4, run 1 one, runs 2..43 one each
    assert len(ds.train_index) == 47 == manifest["counts"]["train_tuples"]
    assert rel(44, 0) not in list(ds.relpath)  # the last run is never trained on
    pos, nn = ds.tuples.positives, ds.tuples.non_negatives
    assert pos[a2].tolist() == [a3]  # exactly 10 m: positive
    assert pos[a3].tolist() == sorted([a2, b0])  # b0 in another run, 10 m away
    assert pos[a4].tolist() == [] and pos[a5].tolist() == [] and pos[b0].tolist() == [a3]
    assert nn[a2].tolist() == sorted([a2, a3, a4, b0])  # a4 at exactly 50 m is non-negative
    assert nn[a4].tolist() == sorted([a2, a3, a4, b0])  # a5 at 50.5 m is a negative
    assert nn[a5].tolist() == [a5]
    far = train[rel(2, 0)]
    assert pos[far].tolist() == [] and nn[far].tolist() == [far]
    assert manifest["tuples"]["source"].startswith("computed")


def test_oxford_evaluation_runs_and_queries(oxford):
    _, _, _, ds = oxford
    (loc,) = ds.evaluation.locations
    assert ds.evaluation.protocol == "pnv" and ds.evaluation.threshold == 25.0
    assert ds.evaluation.skip_same_run is True
    assert [r.name for r in loc.runs] == [OXFORD_RUNS[i] for i in OX_EVAL_RUNS]
    queries = {r.name: [str(ds.relpath[q]) for q in r.queries] for r in loc.runs}
    assert queries[OXFORD_RUNS[5]] == [rel(5, 0, OX_EVAL)]
    assert queries[OXFORD_RUNS[6]] == [rel(6, 0, OX_EVAL)]  # 25 m east of the centre
    assert sum(len(q) for q in queries.values()) == 2
    # databases hold every pointcloud_20m submap of their run
    assert [str(ds.relpath[i]) for i in loc.runs[1].rows] == [
        rel(6, 0, OX_EVAL),
        rel(6, 1, OX_EVAL),
    ]
    assert (ds.split[loc.runs[1].rows] == "test").all()


def test_oxford_protocol_with_a_decoy(oxford):
    """Descriptors = positions, except run 6's far submap, which poses next to run 5's
    query: run5 -> run6 finds the true match at rank 2, run6 -> run5 at rank 1; every other
    pair has no true neighbour within 25 m."""
    _, _, _, ds = oxford
    desc = ds.xy.copy()
    desc[list(ds.relpath).index(rel(6, 1, OX_EVAL))] = [1001.0, 1000.0]
    res = evaluate_prepared(DescriptorRetriever(desc), ds)
    oxf = res.locations["oxford"]
    assert set(oxf.pairs) == {(OXFORD_RUNS[5], OXFORD_RUNS[6]), (OXFORD_RUNS[6], OXFORD_RUNS[5])}
    assert oxf.pairs[(OXFORD_RUNS[5], OXFORD_RUNS[6])].r1 == 0.0
    assert oxf.pairs[(OXFORD_RUNS[6], OXFORD_RUNS[5])].r1 == 100.0
    assert res.r1 == pytest.approx(50.0) and res.mrr_hits == pytest.approx(75.0)
    assert len(oxf.skipped_pairs) == 2 * 21


def test_oxford_default_squares_are_the_spec_ones(tmp_path):
    p1 = (620084.402, 5735712.768)  # P1 (easting, northing)
    p4 = (619932.693, 5734749.304)
    train_en = {0: [(p1[0] + 100, p1[1] - 100), (p4[0] - 140, p4[1] + 140), (p1[0], p1[1] + 160)]}
    root = make_oxford(tmp_path / "bd", train_en=train_en)
    prepare_dataset("oxford", root, tmp_path / "out")
    ds = PreparedDataset.load(tmp_path / "out")
    splits = [ds.split[list(ds.relpath).index(rel(0, k))] for k in range(3)]
    assert splits == ["test", "test", "train"]
    assert json.loads((tmp_path / "out/manifest.json").read_text())["regions"]["source"] == (
        "spec 4.1 (P1-P4)"
    )


def _reference_training(ds, TrainingTuple, drop=None):
    out = {}
    keep = [j for j in range(len(ds.train_index)) if j != drop]
    new_id = {j: k for k, j in enumerate(keep)}
    for k, j in enumerate(keep):
        r = ds.train_index[j]
        out[k] = TrainingTuple(
            id=k,
            timestamp=int(ds.timestamp[r]),
            rel_scan_filepath=str(ds.relpath[r]),
            positives=np.array(
                [new_id[p] for p in ds.tuples.positives[j] if p in new_id], np.int64
            ),
            non_negatives=np.array(
                [new_id[p] for p in ds.tuples.non_negatives[j] if p in new_id], np.int64
            ),
            # pandas row -> object array [northing, easting], as the reference stores it
            position=np.array([np.float64(ds.xy[r, 1]), np.float64(ds.xy[r, 0])], dtype=object),
        )
    return out


def _reference_eval(ds, radius=25.0):
    (loc,) = ds.evaluation.locations
    runs = [[(str(ds.relpath[i]), ds.xy[i, 1], ds.xy[i, 0]) for i in r.rows] for r in loc.runs]
    queries = [[int(np.flatnonzero(r.rows == q)[0]) for q in r.queries] for r in loc.runs]
    return eval_pickles(runs, queries, radius)


def test_oxford_reference_pickles_agree(oxford, tmp_path):
    root, _, _, ds = oxford
    pk = tmp_path / "pickles"
    with reference_classes() as TrainingTuple:
        write_pickle(
            pk / "training_queries_baseline2.pickle", _reference_training(ds, TrainingTuple)
        )
    db, q = _reference_eval(ds)
    write_pickle(pk / "oxford_evaluation_database.pickle", db)
    write_pickle(pk / "oxford_evaluation_query.pickle", q)
    m = prepare_dataset(
        "oxford",
        root,
        tmp_path / "out",
        PrepareOptions(regions=oxford_regions(tmp_path / "r.json"), pickles=pk),
    )
    checks = {c["check"]: c for c in m["reference_check"]}
    assert checks["training set"]["only_ours"] == checks["training set"]["only_reference"] == 0
    assert checks["training tuples"]["positives_differ"] == 0
    assert checks["training tuples"]["non_negatives_differ"] == 0
    assert any(k.startswith("oxford true neighbours") for k in checks)
    assert all(c.get("neighbours_differ", 0) == 0 for c in checks.values())
    assert (
        m["findings"] == []
        and m["tuples"]["source"] == "reference pickle training_queries_baseline2.pickle"
    )


def test_oxford_reference_pickle_differences_are_reported_and_used(oxford, tmp_path):
    root, _, _, ds = oxford
    pk = tmp_path / "pickles"
    with reference_classes() as TrainingTuple:
        write_pickle(
            pk / "training_queries_baseline2.pickle", _reference_training(ds, TrainingTuple, drop=4)
        )
    _, q = _reference_eval(ds)
    q[0][0][1] = [1]  # a wrong true neighbour of run 5's query in run 6
    write_pickle(pk / "oxford_evaluation_query.pickle", q)
    m = prepare_dataset(
        "oxford",
        root,
        tmp_path / "out",
        PrepareOptions(regions=oxford_regions(tmp_path / "r.json"), pickles=pk),
    )
    warnings = [f["message"] for f in m["findings"] if f["severity"] == "warning"]
    assert any("training set: differs" in w and "1 submap(s) only in ours" in w for w in warnings)
    assert any("true neighbours" in w and "1 of 1 queries" in w for w in warnings)
    ref = PreparedDataset.load(tmp_path / "out")
    assert len(ref.train_index) == 46  # the reference's training set is used
    assert ref.split[list(ref.relpath).index(rel(1, 0))] == "test"  # the dropped one


def test_inhouse_needs_the_unpublished_squares(tmp_path):
    root = make_inhouse(tmp_path / "bd")
    with pytest.raises(PrepareError, match=r"university.*P5-P7.*--regions"):
        prepare_dataset("inhouse", root, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    report = check_dataset("inhouse", root)
    assert report.ok and any("P8-P10" in f.message for f in report.warnings)


def _ih_rel(run, k):
    return f"inhouse_datasets/{run}/{IH[0]}/{T0 + 1000 * k}.bin"


def test_inhouse_sets_by_hand(tmp_path):
    root = make_inhouse(tmp_path / "bd")
    regions = write_regions(
        tmp_path / "r.json",
        {
            "university": {"squares": [{"name": "P5", "center": [0, 300], "half_size": 150}]},
            "residential": {"squares": [{"name": "P8", "center": [400, 100], "half_size": 150}]},
        },
        axes="northing,easting",
    )
    m = prepare_dataset("inhouse", root, tmp_path / "out", PrepareOptions(regions=regions))
    ds = PreparedDataset.load(tmp_path / "out")
    assert len(ds.train_index) == 0 and (ds.split == "test").all()
    locs = {loc.name: loc for loc in ds.evaluation.locations}
    assert list(locs) == ["university", "residential", "business"]
    # sorted runs 10-14 are university_run1..5, 5-9 residential, 0-4 business
    assert [r.name for r in locs["university"].runs] == INHOUSE_RUNS[10:15]
    assert [r.name for r in locs["business"].runs] == INHOUSE_RUNS[0:5]

    def queries(loc):
        return sorted(str(ds.relpath[q]) for r in locs[loc].runs for q in r.queries)

    assert queries("university") == sorted(_ih_rel(f"university_run{k}", 0) for k in (2, 3, 4))
    assert queries("residential") == sorted(_ih_rel(f"residential_run{k}", 1) for k in (1, 2))
    assert len(queries("business")) == 10  # the whole Business District is queried
    assert m["counts"]["evaluation"] == {
        "university": {"queries": 3, "runs": 5},
        "residential": {"queries": 2, "runs": 5},
        "business": {"queries": 10, "runs": 5},
    }


def test_inhouse_queries_from_reference_pickles(tmp_path):
    root = make_inhouse(tmp_path / "bd")
    pk = tmp_path / "pickles"
    for loc, picks in (("university", {2: [1]}), ("residential", {0: [0, 1]})):
        runs = [
            [(_ih_rel(f"{loc}_run{k}", j), float(400 * j), float(100 * k)) for j in range(2)]
            for k in range(1, 6)
        ]
        db, q = eval_pickles(runs, [picks.get(i, []) for i in range(5)], 25.0)
        write_pickle(pk / f"{loc}_evaluation_database.pickle", db)
        write_pickle(pk / f"{loc}_evaluation_query.pickle", q)
    m = prepare_dataset("inhouse", root, tmp_path / "out", PrepareOptions(pickles=pk))
    ds = PreparedDataset.load(tmp_path / "out")
    locs = {loc.name: loc for loc in ds.evaluation.locations}
    uq = [str(ds.relpath[q]) for r in locs["university"].runs for q in r.queries]
    rq = [str(ds.relpath[q]) for r in locs["residential"].runs for q in r.queries]
    assert uq == [_ih_rel("university_run3", 1)]
    assert rq == [_ih_rel("residential_run1", 0), _ih_rel("residential_run1", 1)]
    assert m["regions"]["university"] == "reference pickle university_evaluation_query.pickle"
    assert m["findings"] == []
