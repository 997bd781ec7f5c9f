"""``hotformerloc dataset check|prepare|evaluate``: malformed folders give one report (exit
1) and never a traceback; prepare fails with one line (exit 2); outputs are atomic,
checksummed, and never overwritten without --force."""

import hashlib
import json
import sys

import numpy as np
import pytest
from prepare_fixtures import (
    IH,
    OX_TRAIN,
    OXFORD_RUNS,
    make_inhouse,
    make_oxford,
    oxford_regions,
    write_regions,
)

from hotformerloc.cli.main import entrypoint
from hotformerloc.data.benchmark import DatasetError
from hotformerloc.data.prepare import PrepareOptions, check_dataset, prepare_dataset
from hotformerloc.data.prepared import PreparedDataset

T0 = 1400000000000000


def cli(monkeypatch, capsys, *args):
    """Run the console entry point in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["hotformerloc", *map(str, args)])
    code = 0
    try:
        entrypoint()
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_oxford(tmp_path_factory.mktemp("good") / "benchmark_datasets")


@pytest.fixture()
def broken(tmp_path):
    """An Oxford tree with one problem of each kind (see the test)."""
    root = make_oxford(tmp_path / "benchmark_datasets")
    run = lambda i: root / "oxford" / OXFORD_RUNS[i]  # noqa: E731
    (run(3) / OX_TRAIN[0] / f"{T0}.bin").write_bytes(b"\0" * 1000)  # wrong size
    csv = run(4) / OX_TRAIN[1]
    csv.write_text(csv.read_text().replace("5000.0", "abc", 1))  # bad number, line 2
    (run(8) / OX_TRAIN[1]).unlink()  # missing CSV
    (run(0) / OX_TRAIN[0] / f"{T0 + 5000}.bin").unlink()  # listed, missing
    np.zeros((4096, 3)).tofile(run(9) / OX_TRAIN[0] / "123.bin")  # not listed: warning
    bad = np.zeros((4096, 3))
    bad[7, 2] = 1.5
    bad.tofile(run(0) / OX_TRAIN[0] / f"{T0 + 3000}.bin")  # outside [-1, 1], not sampled
    return root


def test_check_lists_every_problem_of_a_malformed_folder(broken):
    report = check_dataset("oxford", broken, PrepareOptions(full=True))
    errors = "\n".join(f.message for f in report.errors)
    assert "1000 bytes, a PointNetVLAD submap is 4096 x 3 float64 = 98304 bytes" in errors
    assert f"{OXFORD_RUNS[4]}/{OX_TRAIN[1]} line 2: northing 'abc' is not a number" in errors
    assert f"{OXFORD_RUNS[8]}/{OX_TRAIN[1]}: missing location CSV" in errors
    assert (
        "6 submaps in pointcloud_locations_20m_10overlap.csv but 5 .bin files in "
        "pointcloud_20m_10overlap/ (1 listed files missing, 0 not listed)"
    ) in errors
    assert "points outside [-1, 1] (max |coordinate| 1.500)" in errors
    assert any(
        "1 submaps in" in w.message and "0 listed files missing, 1 not listed" in w.message
        for w in report.warnings
    )
    assert len(report.errors) == 5 and not report.ok


def test_check_cli_report_and_exit_codes(good, broken, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "dataset", "check", "oxford", "--root", good)
    assert code == 0 and "OK: 0 error(s)" in out and "oxford_runs: 45" in out
    code, out, err = cli(
        monkeypatch, capsys, "dataset", "check", "oxford", "--root", broken, "--json"
    )
    data = json.loads(out)
    # by default 3 clouds per run are read (0, 2, 5 of run 0): the out-of-range one is not
    assert code == 1 and data["ok"] is False and data["errors"] == 4
    assert all(f["severity"] in ("error", "warning", "info") for f in data["findings"])
    assert "Traceback" not in err


def test_prepare_on_a_malformed_folder_is_one_line_exit_2(broken, tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "out"
    code, _, err = cli(
        monkeypatch, capsys, "dataset", "prepare", "oxford", "--root", broken, "--out", out_dir
    )
    assert code == 2 and "Traceback" not in err
    line = err.strip()
    assert "\n" not in line.replace(str(broken), "")  # rich may wrap long paths only
    assert line.startswith("error:") and "1 listed files missing" in line  # the first error
    assert "(3 more problem(s))" in line
    assert "hotformerloc dataset check oxford" in line
    assert not out_dir.exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--release", "pcd"], "--release applies to wild-places only"),
        (["--set", "baseline"], "--set applies to kitti and sequence only"),
        (["--subset", "baseline"], "--subset applies to cs-wild-places only"),
        (["--pickle", "train"], "expected ROLE=FILE"),
        (["--pickle", "nope=x.pickle"], "unknown role"),
        (["--regions", "missing.json"], "regions file not found"),
        (["--sequences", "00"], "--sequences applies to kitti and sequence only"),
    ],
)
def test_bad_options_are_user_errors(good, tmp_path, monkeypatch, capsys, args, message):
    code, _, err = cli(
        monkeypatch,
        capsys,
        "dataset",
        "prepare",
        "oxford",
        "--root",
        good,
        "--out",
        tmp_path / "o",
        *args,
    )
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_prepare_writes_checksummed_output_and_needs_force(good, tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "out"
    regions = oxford_regions(tmp_path / "r.json")
    args = ["dataset", "prepare", "oxford", "--root", good, "--out", out_dir, "--regions", regions]
    code, out, _ = cli(monkeypatch, capsys, *args)
    assert code == 0 and "training tuples: 47" in out
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["format"] == "hotformerloc-prepared" and manifest["dataset"] == "oxford"
    assert set(manifest["files"]) == {"submaps.csv", "tuples.npz", "evaluation.json"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((out_dir / name).read_bytes()).hexdigest() == digest
    assert manifest["counts"]["worlds"]["oxford"]["split"] == {"test": 27, "buffer": 0, "train": 47}
    assert manifest["options"]["regions"] == str(regions)
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 2 and "already exists (pass --force" in err
    before = (out_dir / "submaps.csv").stat().st_mtime_ns
    code, _, _ = cli(monkeypatch, capsys, *args, "--force")
    assert code == 0 and (out_dir / "submaps.csv").stat().st_mtime_ns != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.json"]  # no temp folders


def test_tampered_output_is_detected(good, tmp_path):
    prepare_dataset("oxford", good, tmp_path / "out")
    csv = tmp_path / "out" / "submaps.csv"
    csv.write_text(csv.read_text().replace(",train,", ",test,", 1))
    with pytest.raises(DatasetError, match=r"submaps.csv: SHA-256 does not match"):
        PreparedDataset.load(tmp_path / "out")
    with pytest.raises(DatasetError, match="not a prepared dataset"):
        PreparedDataset.load(good)


def test_failure_while_writing_leaves_nothing(good, tmp_path, monkeypatch):
    import hotformerloc.data.prepare.common as common

    real = common.atomic_write_text

    def failing(path, text, *a, **k):
        if path.name == "evaluation.json":
            raise OSError("disk full")
        return real(path, text, *a, **k)

    monkeypatch.setattr(common, "atomic_write_text", failing)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset("oxford", good, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_dataset_moved_root_option(good, tmp_path):
    prepare_dataset("oxford", good, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["source_root"] == str(good.resolve())
    ds = PreparedDataset.load(tmp_path / "out", check_files=True, root=good)
    assert ds.path(0) == good / ds.relpath[0]
    with pytest.raises(DatasetError, match="does not exist; pass root="):
        PreparedDataset.load(tmp_path / "out", root=tmp_path / "elsewhere")


def test_recording_layouts_dispatch_to_the_recordings_module(tmp_path, monkeypatch, capsys):
    (tmp_path / "rec").mkdir()
    code, out, _ = cli(monkeypatch, capsys, "dataset", "check", "kitti", "--root", tmp_path / "rec")
    assert code == 1 and "layout: kitti" in out and "no sequences/ folder" in out
    code, _, err = cli(
        monkeypatch,
        capsys,
        "dataset",
        "prepare",
        "kitti",
        "--root",
        tmp_path / "rec",
        "--out",
        tmp_path / "o",
        "--set",
        "nope=1",
    )
    assert code == 2 and "unknown config key nope" in err
    code, _, err = cli(
        monkeypatch,
        capsys,
        "dataset",
        "prepare",
        "sequence",
        "--root",
        tmp_path / "rec",
        "--out",
        tmp_path / "o",
        "--sequences",
        "a,b",
    )
    assert code == 2 and "Traceback" not in err and not (tmp_path / "o").exists()


def test_evaluate_command_matches_the_library(tmp_path, monkeypatch, capsys):
    from hotformerloc.eval import DescriptorRetriever
    from hotformerloc.eval.benchmark import embed_benchmark
    from hotformerloc.eval.prepared import evaluate_prepared
    from hotformerloc.model.checkpoint import load_model

    root = make_inhouse(tmp_path / "bd", step=5.0)  # runs revisit within 20 m
    regions = write_regions(
        tmp_path / "r.json",
        {
            "university": {"squares": [{"name": "P5", "center": [0, 0], "half_size": 150}]},
            "residential": {"squares": [{"name": "P8", "center": [400, 0], "half_size": 150}]},
        },
        axes="northing,easting",
    )
    prepare_dataset("inhouse", root, tmp_path / "out", PrepareOptions(regions=regions))
    code, out, err = cli(
        monkeypatch,
        capsys,
        "dataset",
        "evaluate",
        "--data",
        tmp_path / "out",
        "--model",
        "hotformerloc-tiny",
        "--device",
        "cpu",
        "--json",
    )
    assert code == 0, err
    got = json.loads(out)
    ds = PreparedDataset.load(tmp_path / "out")
    net, _ = load_model("hotformerloc-tiny")
    want = evaluate_prepared(DescriptorRetriever(embed_benchmark(net, ds, None, 32)), ds)
    assert list(got["locations"]) == ["university", "residential", "business"]
    assert got["r1"] == pytest.approx(want.r1)
    assert got["locations"]["business"]["recall_1pct"] == pytest.approx(
        want.locations["business"].recall_1pct
    )
    assert f"{IH[0]}" in str(ds.relpath[0])
    # --reference-batching: the reference's batch-wide windows; with batch 1 it is the same
    code, out, err = cli(
        monkeypatch,
        capsys,
        "dataset",
        "evaluate",
        "--data",
        tmp_path / "out",
        "--model",
        "hotformerloc-tiny",
        "--device",
        "cpu",
        "--reference-batching",
        "--batch-size",
        "1",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["r1"] == pytest.approx(want.r1)
