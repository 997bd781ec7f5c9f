"""`hotformerloc db build|add|info` and `hotformerloc query` on a tiny benchmark (untrained
hotformerloc-tiny, seed 0), run in-process through the console entrypoint."""

import itertools
import json
import shutil

import numpy as np
import pytest
import torch

from cli_helpers import run_cli as cli
from hotformerloc.index import DataFolderError, Localizer, PlaceDatabase, scan_places
from hotformerloc.io import PointCloud, write_pointcloud

GROUND = [(1000.0, 0.0, 0.0, 0.0), (1005.0, 8.0, 1.0, 90.0), (1010.0, 16.0, 2.0, 180.0)]
AERIAL = [(2000.0, 0.0, 0.0, 0.0), (2001.0, 10.0, 0.0, 0.0), (2002.0, 20.0, 0.0, 0.0)]


def forest(seed: int) -> np.ndarray:
    """A 30 m forest-like submap: ground points and 12 trunks (metric, own frame)."""
    rng = np.random.default_rng(seed)
    ground = np.c_[rng.uniform(-25, 25, (600, 2)), rng.normal(0, 0.05, 600)]
    trunks = []
    for cx, cy in rng.uniform(-20, 20, (12, 2)):
        a = rng.uniform(0, 2 * np.pi, 60)
        trunks.append(np.c_[cx + 0.3 * np.cos(a), cy + 0.3 * np.sin(a), rng.uniform(0, 8, 60)])
    return np.concatenate([ground, *trunks]).astype(np.float32)


def yaw_quat(deg: float) -> tuple[float, float, float, float]:
    h = np.radians(deg) / 2
    return 0.0, 0.0, float(np.sin(h)), float(np.cos(h))


def write_sequence(folder, rows, seed) -> None:
    (folder / "clouds").mkdir(parents=True)
    lines = ["timestamp,x,y,z,qx,qy,qz,qw"]
    for k, (ts, x, y, yaw) in enumerate(rows):
        write_pointcloud(folder / "clouds" / f"{ts:.6f}.pcd", PointCloud(forest(seed + k)))
        lines.append(",".join(f"{v:.9f}" for v in (ts, x, y, 0.0, *yaw_quat(yaw))))
    (folder / "poses.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_db")
    world = root / "bench" / "forest"
    write_sequence(world / "ground_01", GROUND, 0)
    write_sequence(world / "aerial", AERIAL, 10)
    split = ["sequence,timestamp,x,y,source,split"]
    split += [f"ground_01,{ts:.6f},{x},{y},ground,test" for ts, x, y, _ in GROUND]
    split += [f"aerial,{ts:.6f},{x},{y},aerial,test" for ts, x, y, _ in AERIAL]
    (world / "split.csv").write_text("\n".join(split) + "\n")
    plain = root / "plain"
    plain.mkdir()
    lines = ["timestamp,x,y,z,qx,qy,qz,qw"]
    for k, ts in enumerate((5.0, 6.0)):
        write_pointcloud(plain / f"{ts:.6f}.pcd", PointCloud(forest(20 + k)))
        lines.append(",".join(str(v) for v in (ts, 100.0 + k, 50.0, 0.0, *yaw_quat(90.0))))
    (plain / "poses.csv").write_text("\n".join(lines) + "\n")
    db = root / "db"
    code, _, err = cli(
        "db",
        "build",
        "--model",
        "hotformerloc-tiny",
        "--data",
        str(root / "bench"),
        "--out",
        str(db),
    )
    assert code == 0, err
    return root


@pytest.fixture
def db_copy(data, tmp_path):
    shutil.copytree(data / "db", tmp_path / "db")
    return tmp_path / "db"


def cloud(data, seq: str, ts: float):
    return data / "bench" / "forest" / seq / "clouds" / f"{ts:.6f}.pcd"


def test_info_reports_schema_counts_and_checksums(data):
    code, out, _ = cli("db", "info", str(data / "db"), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["count"] == 6 and info["dim"] == 256 and info["metric"] == "l2-unit"
    assert info["model"]["name"] == "hotformerloc-tiny" and info["model"]["data_scale"] is None
    assert info["counts"]["source"] == {"aerial": 3, "ground": 3}
    assert info["counts"]["sequence"] == {"forest/aerial": 3, "forest/ground_01": 3}
    assert info["checksums"].startswith("ok")
    code, out, _ = cli("db", "info", str(data / "db"))
    assert code == 0 and "hotformerloc-tiny" in out and "forest/ground_01" in out


def test_query_json_finds_the_scan_itself_with_its_pose(data):
    scan = cloud(data, "ground_01", 1005.0)
    code, out, _ = cli("query", "--db", str(data / "db"), str(scan), "--top-k", "4", "--json")
    assert code == 0
    res = json.loads(out)["results"]
    assert len(res) == 1 and res[0]["query"] == str(scan)
    cands = res[0]["candidates"]
    assert [c["rank"] for c in cands] == [1, 2, 3, 4]
    top = cands[0]
    assert top["id"] == "forest/ground_01/1005.000000" and top["distance"] < 1e-3
    assert top["source"] == "ground" and top["timestamp"] == 1005.0
    # poses.csv: yaw 90 deg at (8, 1, 0) -> rotation [[0,-1,0],[1,0,0],[0,0,1]]
    expect = [[0, -1, 0, 8], [1, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]]
    np.testing.assert_allclose(top["pose"], expect, atol=1e-6)
    assert all(a["distance"] <= b["distance"] for a, b in itertools.pairwise(cands))
    assert top["verification"] is None and top["map_pose"] is None
    # the Python API gives the same ranking
    loc = Localizer.open(data / "db")
    api = loc.query_file(scan, k=4)
    assert [c.id for c in api.candidates] == [c["id"] for c in cands]


def test_query_filters_and_table(data):
    scan = cloud(data, "ground_01", 1000.0)
    code, out, _ = cli("query", "--db", str(data / "db"), str(scan), "--source", "aerial", "--json")
    assert code == 0
    cands = json.loads(out)["results"][0]["candidates"]
    assert len(cands) == 3 and {c["source"] for c in cands} == {"aerial"}
    code, out, _ = cli("query", "--db", str(data / "db"), str(scan), "--near", "9,0,5", "--json")
    ids = [c["id"] for c in json.loads(out)["results"][0]["candidates"]]
    assert sorted(ids) == ["forest/aerial/2001.000000", "forest/ground_01/1005.000000"]
    code, out, _ = cli("query", "--db", str(data / "db"), str(scan), "-k", "2")
    assert code == 0 and "forest/ground_01/1000.000000" in out.replace("\n", "")


def test_add_a_plain_folder_with_poses(data, db_copy):
    code, out, err = cli("db", "add", "--db", str(db_copy), "--data", str(data / "plain"))
    assert code == 0, err
    db = PlaceDatabase.open(db_copy)
    assert len(db) == 8 and db.schema.generation == 2
    e = db.entry(db.row("plain/plain/6.000000.pcd"))
    assert (e.source, e.world, e.sequence, e.timestamp) == ("ground", "plain", "plain", 6.0)
    np.testing.assert_allclose(e.pose[:3, 3], [101.0, 50.0, 0.0])
    np.testing.assert_allclose(e.pose[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    code, out, _ = cli(
        "query", "--db", str(db_copy), str(data / "plain" / "6.000000.pcd"), "--json"
    )
    assert json.loads(out)["results"][0]["candidates"][0]["id"] == "plain/plain/6.000000.pcd"
    # adding the same folder again: duplicate ids, one line, exit 2, nothing written
    code, out, err = cli("db", "add", "--db", str(db_copy), "--data", str(data / "plain"))
    assert code == 2 and "already in the database" in err and len(err.strip().splitlines()) == 1
    assert len(PlaceDatabase.open(db_copy)) == 8


def test_another_model_is_refused(data, db_copy, tmp_path):
    from hotformerloc import create_model
    from hotformerloc.config import to_dict
    from hotformerloc.model.checkpoint import save_checkpoint

    torch.manual_seed(1)
    model = create_model("hotformerloc-tiny", input_scale=0.05)
    ckpt = tmp_path / "other.safetensors"
    save_checkpoint(ckpt, model, "hotformerloc-tiny", to_dict(model.config))
    for args in (
        ("db", "add", "--db", str(db_copy), "--data", str(data / "plain"), "--model", str(ckpt)),
        ("query", "--db", str(db_copy), str(data / "plain" / "5.000000.pcd"), "-m", str(ckpt)),
    ):
        code, _, err = cli(*args)
        assert code == 2 and "built with model hotformerloc-tiny" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert len(PlaceDatabase.open(db_copy)) == 6


def test_errors_are_one_line_and_exit_2(data, tmp_path):
    missing = tmp_path / "nowhere"
    code, out, err = cli("query", "--db", str(missing), str(cloud(data, "aerial", 2000.0)))
    assert code == 2 and str(missing) in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and out == ""
    code, _, err = cli(
        "db",
        "build",
        "--model",
        "hotformerloc-tiny",
        "--data",
        str(data / "plain"),
        "--out",
        str(data / "db"),
    )
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("db", "info", str(missing))
    assert code == 2 and "does not exist" in err
    code, _, err = cli(
        "query", "--db", str(data / "db"), str(cloud(data, "aerial", 2000.0)), "--near", "1,2"
    )
    assert code == 2 and "--near" in err
    # a corrupted database: info prints what it can, then one error line naming the file
    broken = tmp_path / "broken"
    shutil.copytree(data / "db", broken)
    meta = broken / "segments" / "000001" / "metadata.json"
    meta.write_text(meta.read_text().replace("ground_01", "ground_02"))
    code, out, err = cli("db", "info", str(broken), "--json")
    assert code == 2 and str(meta) in err and "checksum mismatch" in err
    assert json.loads(out)["checksums"].startswith("FAILED")


def test_scan_places_errors_name_the_file(tmp_path):
    with pytest.raises(DataFolderError, match="does not exist"):
        scan_places(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFolderError, match="no point-cloud files"):
        scan_places(tmp_path / "empty")
    folder = tmp_path / "f"
    folder.mkdir()
    write_pointcloud(folder / "1.000000.pcd", PointCloud(forest(0)))
    (folder / "poses.csv").write_text("timestamp,x,y,z,qx,qy,qz\n1,0,0,0,0,0,0\n")
    with pytest.raises(DataFolderError, match=r"poses\.csv: missing column\(s\) qw"):
        scan_places(folder)
    (folder / "poses.csv").write_text("timestamp,x,y,z,qx,qy,qz,qw\n2,0,0,0,0,0,0,1\n")
    with pytest.raises(DataFolderError, match=r"1\.000000\.pcd: no pose"):
        scan_places(folder)
    (folder / "poses.csv").unlink()
    (entry,) = scan_places(folder, "aerial", world="map", sequence="run")
    assert (entry.id, entry.source, entry.timestamp, entry.pose) == (
        "map/run/1.000000.pcd",
        "aerial",
        1.0,
        None,
    )


def test_query_rerank_verifies_and_gives_the_map_pose(data):
    pytest.importorskip("hotformerloc.index.rerank")
    scan = cloud(data, "ground_01", 1005.0)
    code, out, err = cli(
        "query", "--db", str(data / "db"), str(scan), "-k", "3", "--rerank", "--json"
    )
    assert code == 0, err
    res = json.loads(out)["results"][0]
    assert res["timings"]["rerank_s"] > 0
    cands = res["candidates"]
    assert [c["rank"] for c in cands] == [1, 2, 3]
    fitness = [c["verification"]["fitness"] for c in cands]
    assert fitness == sorted(fitness, reverse=True)
    top = cands[0]
    assert top["id"] == "forest/ground_01/1005.000000" and fitness[0] >= 0.9
    # the scan is the submap itself: map pose == the submap's pose
    np.testing.assert_allclose(top["map_pose"], top["pose"], atol=0.05)


def test_query_views_search_the_turned_scan(data):
    """A model with query_views 4 finds a scan turned by 90 degrees at the distance of the
    view that turns it back; every distance is the smallest over the views."""
    from dataclasses import replace

    from hotformerloc.index import load_embedder
    from hotformerloc.io import read_pointcloud

    db = PlaceDatabase.open(data / "db")
    emb = load_embedder("hotformerloc-tiny")
    plain = Localizer(db, emb)
    emb4 = load_embedder("hotformerloc-tiny")
    emb4.model.config = replace(emb4.model.config, query_views=4)
    loc = Localizer(db, emb4)
    xyz = read_pointcloud(cloud(data, "ground_01", 1005.0)).xyz
    turned = xyz @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], np.float32).T
    res = loc.query(turned, k=6)
    assert res.candidates[0].id == "forest/ground_01/1005.000000"
    assert res.candidates[0].distance < 0.2 * plain.query(turned, k=6).candidates[0].distance
    views = emb.embed(
        [
            turned @ np.array(r, np.float32).T
            for r in (
                [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                [[0, -1, 0], [1, 0, 0], [0, 0, 1]],
                [[-1, 0, 0], [0, -1, 0], [0, 0, 1]],
                [[0, 1, 0], [-1, 0, 0], [0, 0, 1]],
            )
        ]
    )
    stored = db.descriptors
    ids = [db.entry(i).id for i in range(len(stored))]
    for c in res.candidates:
        d = np.linalg.norm(views - stored[ids.index(c.id)], axis=1).min()
        assert c.distance == pytest.approx(d, abs=1e-4)
    assert [c.distance for c in res.candidates] == sorted(c.distance for c in res.candidates)


def test_batch_size_and_its_hidden_old_spelling(data, tmp_path):
    """`--batch-size` is the option; the old `--batch` still works for one release, hidden
    from the help; both give the same database."""
    code, out, _ = cli("db", "build", "--help")
    assert code == 0 and "--batch-size" in out and "--batch " not in out
    dbs = []
    for opt in ("--batch-size", "--batch"):
        db = tmp_path / opt.strip("-")
        args = ["--model", "hotformerloc-tiny", "--data", str(data / "bench"), "--out", str(db)]
        code, _, err = cli("db", "build", *args, opt, "2")
        assert code == 0, err
        dbs.append(PlaceDatabase.open(db).descriptors)
    np.testing.assert_array_equal(dbs[0], dbs[1])


def test_localize_a_drive_keeps_the_track_and_writes_trajectory_and_page(data, tmp_path):
    """The ground sequence replayed as a drive (odometry in another frame): the first
    submap waits for confirmation, the next ones match themselves at their true pose."""
    drive = tmp_path / "drive"
    drive.mkdir()
    lines = ["timestamp,x,y,z,qx,qy,qz,qw"]
    for ts, x, y, yaw in GROUND:  # odometry: the true poses moved by 40 m, turned 30 deg
        shutil.copy(cloud(data, "ground_01", ts), drive / f"{ts:.6f}.pcd")
        c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
        ox, oy = 40 + c * x - s * y, s * x + c * y
        lines.append(",".join(f"{v:.9f}" for v in (ts, ox, oy, 0.0, *yaw_quat(yaw + 30))))
    (drive / "poses.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args = ["localize", "--db", str(data / "db"), "--data", str(drive), "--out", str(out)]
    code, stdout, err = cli(*args, "--source", "ground", "-k", "3")
    assert code == 0, err
    assert "3 submaps: 2 matched, 0 predicted by odometry, 1 not localised" in stdout
    rows = (out / "trajectory.csv").read_text().splitlines()
    assert rows[0] == "timestamp,submap,status,confidence,x,y,z,qx,qy,qz,qw,place"
    cells = [r.split(",") for r in rows[1:]]
    assert [c[2] for c in cells] == ["uninitialised", "matched", "matched"]
    assert cells[0][4:11] == [""] * 7
    for (ts, x, y, _), c in zip(GROUND[1:], cells[1:], strict=True):
        assert c[11] == f"forest/ground_01/{ts:.6f}"
        assert float(c[3]) >= 0.9
        np.testing.assert_allclose([float(c[4]), float(c[5])], [x, y], atol=0.05)
    page = (out / "track.html").read_text()
    assert page.count('stroke-width="2"') == 2 and "2 matched" in page
    (drive / "poses.csv").unlink()
    code, _, err = cli(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error:") and "odometry poses (poses.csv)" in err


def test_localize_real_hilti_scans_against_a_database_of_themselves(shared_data, tmp_path):
    """The 30 real Hilti scans as a drive (their poses as odometry) in a database of the
    same scans: every submap after the first matches itself at its own pose."""
    from hotformerloc.io import read_pointcloud
    from hotformerloc.io.poses import write_poses_csv

    src = shared_data / "hilti2023_fragment_sova"
    drive = tmp_path / "drive"
    drive.mkdir()
    stamps, poses = [], []
    for i in range(30):
        cloud = read_pointcloud(src / "clouds" / f"{i}.pcd")
        write_pointcloud(drive / f"{100.0 + i:.6f}.pcd", PointCloud(cloud.xyz))
        stamps.append(100.0 + i)
        poses.append(np.loadtxt(src / "poses" / f"{i}.txt"))
    write_poses_csv(drive / "poses.csv", stamps, np.stack(poses))
    db = tmp_path / "db"
    assert cli("db", "build", "-m", "hotformerloc-tiny", "--data", drive, "--out", db)[0] == 0
    out = tmp_path / "out"
    code, stdout, err = cli("localize", "--db", db, "--data", drive, "--out", out, "-k", "3")
    assert code == 0, err
    assert "30 submaps: 29 matched" in stdout
    rows = [r.split(",") for r in (out / "trajectory.csv").read_text().splitlines()[1:]]
    for (_ts, name, status, conf, x, y, z, *_, place), pose in zip(rows, poses, strict=True):
        if status == "uninitialised":
            continue
        assert place == f"drive/drive/{name}" and float(conf) > 0.95
        np.testing.assert_allclose([float(x), float(y), float(z)], pose[:3, 3], atol=0.05)
