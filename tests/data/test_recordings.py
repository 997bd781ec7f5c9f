"""Users' recordings and KITTI odometry -> benchmark layout (hotformerloc.data.recordings)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from recordings_fixtures import (
    KITTI_TR,
    calib_text,
    make_scene,
    pose,
    poses_csv,
    row12,
    write_kitti_sequence,
    write_sequence,
)
from scipy.spatial import cKDTree

from hotformerloc.baselines import ScanContextConfig, ScanContextRetriever
from hotformerloc.config import ConfigError
from hotformerloc.data import Benchmark
from hotformerloc.data.recordings import (
    RecordingConfig,
    RecordingError,
    aerial_grid,
    assign_splits,
    check_recordings,
    kitti_lidar_poses,
    match_poses,
    plan_centres,
    points_in_polygon,
    prepare_recordings,
    trajectory_coordinate,
    window_bounds,
)
from hotformerloc.eval import evaluate_loop_closure
from hotformerloc.eval.benchmark import benchmark_sets, evaluate_retriever
from hotformerloc.io import PointCloud, read_pointcloud, write_pointcloud
from hotformerloc.io.poses import read_poses_csv

VOXEL = 0.5
TOL = VOXEL * math.sqrt(3) + 1e-3  # a voxel centroid lies inside its voxel
# the test-region diamond |x - 17.5| + |y| <= 4 (not axis-aligned: its bounding box is not it)
DIAMOND = [[13.5, 0.0], [17.5, 4.0], [21.5, 0.0], [17.5, -4.0]]


def _sets(**sections: str) -> list[str]:
    return [f"{k.replace('__', '.')}={v}" for k, v in sections.items()]


def _read_poses(path: Path) -> dict[float, np.ndarray]:
    """timestamp -> (4, 4) from an output poses.csv."""
    table = read_poses_csv(path)
    return {round(t, 6): p for t, p in zip(table.timestamps.tolist(), table.poses, strict=True)}


def _to_map(cloud: np.ndarray, p: np.ndarray) -> np.ndarray:
    return cloud.astype(np.float64) @ p[:3, :3].T + p[:3, 3]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A ``sequence``-layout tree: ``ground_a`` (pcd scans named by timestamp, 41 scans
    1 m apart along +x with roll/pitch/yaw), ``ground_b`` (KITTI .bin scans named by index
    + times.txt, 21 scans 2 m apart along -x at y = 1), ``aerial`` (one map.npy cloud)."""
    root = tmp_path_factory.mktemp("rec") / "forest"
    scene = make_scene((-20, 60), (-20, 20), lambda x, y: abs(y) < 3)
    rng = np.random.default_rng(1)
    pa = [
        pose(i, 0, 1.5, 0.1 * np.sin(i / 3), 0.03 * np.sin(i / 2), 0.02 * np.cos(i / 5))
        for i in range(41)
    ]
    ta = 100.0 + 0.5 * np.arange(41)
    pb = [pose(40 - 2 * i, 1, 1.6, np.pi + 0.05 * np.cos(i)) for i in range(21)]
    tb = 500.0 + np.arange(21)
    world_a = write_sequence(root / "ground_a", scene, pa, ta, "pcd", rng)
    world_b = write_sequence(root / "ground_b", scene, pb, tb, "bin", rng, index_names=True)
    (root / "aerial").mkdir()
    write_pointcloud(root / "aerial" / "map.npy", PointCloud(scene))
    regions = root.parent / "regions.json"
    regions.write_text(json.dumps({"regions": [DIAMOND]}))
    return {
        "root": root,
        "scene": scene,
        "poses_a": pa,
        "times_a": ta,
        "world_a": world_a,
        "world_b": world_b,
        "regions": regions,
    }


def _seq_config(regions: Path | None) -> RecordingConfig:
    sub = "{radius: 15, voxel: 0.5, min_points: 20}"
    items = _sets(
        ground__spacing="5",
        ground__window="2",
        ground__submap=sub,
        aerial__submap=sub,
        split__buffer="6",
    )
    if regions is not None:
        items.append(f"split.regions={regions}")
    return RecordingConfig.from_sets(items)


@pytest.fixture(scope="module")
def converted(recordings: dict) -> tuple[Path, dict]:
    out = recordings["root"].parent / "bench"
    manifest = prepare_recordings(
        "sequence", recordings["root"], out, config=_seq_config(recordings["regions"])
    )
    return out, manifest


# --------------------------------------------------------------------------- config


def test_config_from_sets_keeps_text_and_section_defaults() -> None:
    cfg = RecordingConfig.from_sets(["sequences=[00, 05]", "kitti.window=2", "world=007"])
    assert cfg.sequences == ["00", "05"] and cfg.world == "007"
    # a partial override keeps the other KITTI defaults (not the generic section defaults)
    assert (cfg.kitti.by, cfg.kitti.spacing, cfg.kitti.window) == ("scan", 1.0, 2.0)
    assert cfg.kitti.submap.remove_ground is False and cfg.kitti.submap.radius == 50.0
    assert cfg.ground.submap.remove_ground is True and cfg.ground.submap.radius == 30.0
    assert RecordingConfig.from_sets(["split.regions=null"]).split.regions is None
    assert RecordingConfig.from_dict({"ground": {"by": "time"}}).ground.spacing == 3.0


@pytest.mark.parametrize(
    ("items", "match"),
    [
        (["ground.spacin=3"], r"unknown config key ground\.spacin"),
        (["colour=red"], "unknown config key colour"),
        (["aerial.submap.radius=-1"], r"aerial\.submap: radius must be > 0"),
        (["kitti.spacing=1.5"], r"kitti: with by=scan.*integers"),
        (["ground.by=walk"], r"ground\.by: 'walk' is not one of"),
        (["poses.max_gap=soon"], r"poses\.max_gap: expected a number"),
        (["world=a/b"], "not a valid folder name"),
        (["spacing"], "expected KEY=VALUE"),
    ],
)
def test_config_errors_name_the_key(items: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RecordingConfig.from_sets(items)


# --------------------------------------------------------------------------- planning by hand


def test_plan_centres_and_windows_by_hand() -> None:
    # distance: scans at x = 0, 0.9, 1.8, ... (0.9 m steps), spacing 2 m: greedy keeps the
    # first scan at >= 2 m past the previous centre: 0, 2.7, 5.4, 8.1
    xs = 0.9 * np.arange(10)
    positions = np.column_stack([xs, np.zeros(10), np.zeros(10)])
    coord = trajectory_coordinate(positions, np.zeros(10), "distance")
    assert np.allclose(coord, xs)
    assert plan_centres(coord, 2.0).tolist() == [0, 3, 6, 9]
    # window 2 m around x = 2.7: scans 1.8, 2.7, 3.6 -> [2, 5)
    assert window_bounds(coord, 3, 2.0) == (2, 5)
    assert window_bounds(coord, 0, 0.0) == (0, 1)
    # time: 0, 0.4, 1.1, 1.9, 2.0, 3.2 with 1 s spacing -> 0, 1.1, 3.2 (2.0 - 1.1 < 1)
    t = np.array([0, 0.4, 1.1, 1.9, 2.0, 3.2]) + 1.6e9  # epoch seconds: float noise ~2e-7
    assert plan_centres(trajectory_coordinate(positions[:6], t, "time"), 1.0).tolist() == [0, 2, 5]
    assert window_bounds(t, 2, 2.0) == (1, 5)  # |t - 1.1| <= 1: 0.4 .. 2.0
    # scan: every 3rd scan, window 2 scans = the centre and one either side
    c = trajectory_coordinate(positions, np.zeros(10), "scan")
    assert plan_centres(c, 3).tolist() == [0, 3, 6, 9]
    assert window_bounds(c, 9, 2) == (8, 10)


def test_aerial_grid_by_hand() -> None:
    # extent x [-20, 60], y [-20, 20], radius 15, grid 10: x in [-5, 45] -> 0..40, y in
    # [-5, 5] -> 0; a map narrower than 2 radii gets its middle
    g = aerial_grid(np.array([-20.0, -20.0]), np.array([60.0, 20.0]), 15.0, 10.0)
    assert g.tolist() == [[0, 0], [10, 0], [20, 0], [30, 0], [40, 0]]
    g = aerial_grid(np.array([0.0, 0.0]), np.array([20.0, 50.0]), 15.0, 10.0)
    assert g.tolist() == [[10, 20], [10, 30]]
    g = aerial_grid(np.array([0.0, 0.0]), np.array([34.0, 34.0]), 15.0, 10.0)  # [15, 19]: no 10k
    assert g.tolist() == [[17, 17]]


def test_polygon_and_splits_by_hand() -> None:
    poly = np.array(DIAMOND)
    xy = np.array([[17.5, 0], [15, 1], [14, 3.5], [21, -0.4], [13, 0], [17.5, 4.5]])
    # (14, 3.5) is inside the bounding box but |dx| + |dy| = 7 > 4
    assert points_in_polygon(xy, poly).tolist() == [True, True, False, True, False, False]
    closed = np.vstack([poly, poly[:1]])
    assert points_in_polygon(xy, closed).tolist() == points_in_polygon(xy, poly).tolist()
    # the ground query (15, 0) is inside; buffer 6: (11, 0) d=4 buffer, (22, 0) d=7 train;
    # an aerial submap inside is test too; an aerial one 5 m away is buffer
    xy = np.array([[15, 0], [11, 0.0], [22, 0], [17, 2], [10, 0], [40, 0]])
    ground = np.array([True, True, True, False, False, True])
    split = assign_splits(xy, ground, [poly], 6.0)
    assert split.tolist() == ["test", "buffer", "train", "test", "buffer", "train"]
    assert assign_splits(xy, ground, [], 6.0).tolist() == ["train"] * 6


def test_match_poses_exact_and_interpolated() -> None:
    pt = np.array([0.0, 0.1, 0.2, 5.0])
    poses = np.stack([pose(0, 0, 0, 0), pose(1, 0, 0, 0.2), pose(2, 2, 0, 0.4), pose(9, 0, 0, 0)])
    scans = np.array([0.1 + 4e-4, 0.15, 1.0, 6.0, -1.0])
    out, found = match_poses(scans, pt, poses, tolerance=1e-3, max_gap=0.2)
    assert found.tolist() == [True, True, False, False, False]  # 1.0: gap 4.8 s > 0.2
    assert np.allclose(out[0], poses[1])  # within tolerance: the pose itself
    assert np.allclose(out[1], pose(1.5, 1.0, 0, 0.3))  # halfway: mid position, half yaw


# --------------------------------------------------------------------------- sequence layout


def test_sequence_submap_counts_positions_and_poses(converted, recordings) -> None:
    out, manifest = converted
    bench = Benchmark.load(out)
    assert bench.worlds == ["forest"]
    a = bench.select(sequence="ground_a")
    # ground_a: 1 m steps along x, spacing 5: centres at x = 0, 5, ..., 40
    assert bench.xy[a].tolist() == [[5.0 * k, 0.0] for k in range(9)]
    assert bench.timestamp[a].tolist() == [100.0 + 2.5 * k for k in range(9)]
    b = bench.select(sequence="ground_b")
    # ground_b: 2 m steps from x = 40 towards 0, spacing 5 -> every 3rd scan (6 m)
    assert bench.xy[b].tolist() == [[40.0 - 6 * k, 1.0] for k in range(7)]
    assert bench.timestamp[b].tolist() == [500.0 + 3 * k for k in range(7)]
    g = bench.select(sequence="aerial")
    assert bench.xy[g].tolist() == [[10.0 * k, 0.0] for k in range(5)]
    assert set(bench.source[g]) == {"aerial"} and set(bench.source[a]) == {"ground"}
    # submap poses are the centre scans' sensor poses
    got = _read_poses(out / "forest" / "ground_a" / "poses.csv")
    for k in range(9):
        assert np.allclose(got[100.0 + 2.5 * k], recordings["poses_a"][5 * k], atol=1e-6)
    counts = manifest["counts"]["forest"]
    assert counts["submaps"] == 21 and counts["sequences"]["ground_a"]["scans"] == 41
    assert counts["sequences"]["aerial"]["source"] == "aerial"
    assert manifest["scale"] == pytest.approx(1 / 15)
    assert manifest["layout"] == "sequence" and manifest["protocol"]["ground_to_aerial"] is True


def test_sequence_splits_by_hand(converted) -> None:
    out, manifest = converted
    bench = Benchmark.load(out)
    got = {
        (s, round(x), round(y)): sp
        for s, (x, y), sp in zip(bench.sequence, bench.xy, bench.split, strict=True)
    }
    # test: inside the diamond; buffer: within 6 m of a ground test query (15,0), (20,0), (16,1)
    expected_test = {
        ("ground_a", 15, 0),
        ("ground_a", 20, 0),
        ("ground_b", 16, 1),
        ("aerial", 20, 0),
    }
    expected_buffer = {
        ("ground_a", 10, 0),
        ("ground_a", 25, 0),  # 5 m from (15,0) / (20,0)
        ("ground_b", 22, 1),
        ("ground_b", 10, 1),  # sqrt(5), sqrt(26) = 5.1
        ("aerial", 10, 0),  # 5 m from (15, 0)
    }
    assert {k for k, v in got.items() if v == "test"} == expected_test
    assert {k for k, v in got.items() if v == "buffer"} == expected_buffer
    assert sum(v == "train" for v in got.values()) == 21 - 9
    c = manifest["counts"]["forest"]
    assert (c["ground_test"], c["ground_buffer"], c["aerial_test"], c["aerial_train"]) == (
        3,
        4,
        1,
        3,
    )
    regions = json.loads((out / "forest" / "test_regions.json").read_text())
    assert regions["regions"] == [DIAMOND] and regions["buffer"] == 6.0


def test_accumulated_submaps_reproject_onto_the_scene(converted, recordings) -> None:
    out, _ = converted
    bench = Benchmark.load(out)
    poses = _read_poses(out / "forest" / "ground_a" / "poses.csv")
    world = recordings["world_a"]
    for i in bench.select(sequence="ground_a")[[1, 4, 8]]:
        t = float(bench.timestamp[i])
        k = round((t - 100.0) / 0.5)  # the centre scan; window 2 m = scans k-1..k+1
        union = np.concatenate(world[max(k - 1, 0) : k + 2])
        pts = _to_map(bench.load_cloud(i), poses[t])
        d, _ = cKDTree(union).query(pts)
        assert d.max() <= TOL  # every submap point is on the accumulated scans
        # every non-ground scan point within the crop is represented (crop edge excluded)
        c = poses[t][:2, 3]
        keep = (union[:, 2] > 0.6) & (np.linalg.norm(union[:, :2] - c, axis=1) < 15 - VOXEL)
        d, _ = cKDTree(pts).query(union[keep])
        assert keep.sum() > 200 and d.max() <= TOL
        assert pts[:, 2].min() > 0.4  # ground (z = 0) removed
    # the cloud file carries the pose as VIEWPOINT, and the aerial submaps sit on the scene
    i = int(bench.select(sequence="aerial")[2])
    cloud = read_pointcloud(bench.path(i))
    assert np.allclose(cloud.pose[:3, 3], [20, 0, 0], atol=1e-6)
    d, _ = cKDTree(recordings["scene"]).query(cloud.world_xyz())
    assert d.max() <= TOL


def test_manifest_checksums_and_atomic_output(converted) -> None:
    out, manifest = converted
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"manifest.json"}
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["config"]["ground"]["spacing"] == 5.0
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_scan_context_evaluates_the_converted_benchmark(converted) -> None:
    out, _ = converted
    bench = Benchmark.load(out)
    cfg = ScanContextConfig(max_radius=15.0, height_reference="min")
    retr = ScanContextRetriever.from_clouds([bench.load_cloud(i) for i in range(len(bench))], cfg)
    res = evaluate_retriever(retr, bench)
    g2g, g2a = benchmark_sets(bench)
    assert [len(r) for r in g2g["forest"]] == [9, 7]  # databases: all submaps of a run
    assert len(g2a["forest"].aerial) == 5
    pairs = res.g2g.locations["forest"].pairs
    # queries: the test submaps (2 of ground_a, 1 of ground_b), all with a revisit in 15 m
    assert pairs[("ground_a", "ground_b")].num_queries == 2
    assert pairs[("ground_b", "ground_a")].num_queries == 1
    cross = res.g2a.locations["forest"].pairs
    assert {k: v.num_queries for k, v in cross.items()} == {
        ("ground_a", "aerial"): 2,
        ("ground_b", "aerial"): 1,
    }
    assert 0.0 <= res.summary()["ar1"] <= 100.0


def test_aerial_scans_accumulate_into_a_map(tmp_path: Path) -> None:
    scene = make_scene((0, 40), (0, 20), lambda x, y: False, seed=3)
    rng = np.random.default_rng(2)
    poses = [pose(5 + 10 * i, 10, 60, 0.3 * i, 0.05, -0.04) for i in range(4)]
    root = tmp_path / "site"
    world = write_sequence(root / "drone", scene, poses, 10.0 * np.arange(4), "ply", rng)
    (root / "drone" / "source.txt").write_text("aerial\n")
    cfg = RecordingConfig.from_sets(
        ["aerial.submap={radius: 8, voxel: 0.5, min_points: 20}", "aerial.grid=8"]
    )
    manifest = prepare_recordings("sequence", root, tmp_path / "out", config=cfg)
    bench = Benchmark.load(tmp_path / "out")
    # x in [8, 32] -> 8, 16, 24, 32; y in [8, 12] -> 8 (multiples of 8)
    assert bench.xy.tolist() == [[8, 8], [16, 8], [24, 8], [32, 8]]
    assert set(bench.source) == {"aerial"} and manifest["protocol"]["ground_to_aerial"] is False
    union = np.concatenate(world)
    for i in range(len(bench)):
        pts = read_pointcloud(bench.path(i)).world_xyz()
        assert cKDTree(union).query(pts)[0].max() <= TOL


# --------------------------------------------------------------------------- KITTI


@pytest.fixture(scope="module")
def kitti(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """KITTI tree: sequence 00 drives 1.25 laps of a 10 m circle (30 scans, 1 s apart,
    15 degrees per scan) starting at the map origin; sequence 01 has no ground truth."""
    root = tmp_path_factory.mktemp("kitti") / "odometry"
    scene = make_scene((-20, 20), (-10, 30), lambda x, y: abs(math.hypot(x, y - 10) - 10) < 3)
    scene[:, 2] -= 1.73  # the map frame is the lidar frame of scan 0, 1.73 m above the road
    theta = 2 * np.pi * np.arange(30) / 24
    truth = [
        pose(10 * np.sin(a), 10 - 10 * np.cos(a), 0.0, a, 0.02 * np.sin(a), 0.015 * np.sin(2 * a))
        for a in theta
    ]
    rng = np.random.default_rng(4)
    world = write_kitti_sequence(root, "00", scene, truth, np.arange(30.0), rng)
    write_kitti_sequence(root, "01", scene, truth[:2], np.arange(2.0), rng, with_poses=False)
    return {"root": root, "truth": truth, "world": world}


@pytest.fixture(scope="module")
def kitti_out(kitti: dict) -> tuple[Path, dict]:
    out = kitti["root"].parent / "kitti-bench"
    cfg = RecordingConfig.from_sets(
        ["kitti.submap={radius: 20, voxel: 0.5, min_points: 20}", "loop_closure.skip_time=10"]
    )
    return out, prepare_recordings("kitti", kitti["root"], out, config=cfg)


def test_kitti_lidar_pose_convention() -> None:
    truth = np.stack([pose(3, -2, 0.5, 0.7, 0.1, -0.05), pose(-1, 4, 0.2, -2.0, 0.0, 0.2)])
    camera = KITTI_TR @ truth @ np.linalg.inv(KITTI_TR)
    assert not np.allclose(camera, truth, atol=0.1)  # the convention matters
    assert np.allclose(kitti_lidar_poses(camera, KITTI_TR), truth, atol=1e-12)
    # a point seen by the lidar of scan i lands on the same spot both ways
    p_velo = np.array([5.0, 1.0, -1.0, 1.0])
    via_camera = np.linalg.inv(KITTI_TR) @ camera[0] @ KITTI_TR @ p_velo
    assert np.allclose(via_camera, truth[0] @ p_velo)


def test_kitti_poses_submaps_and_protocol(kitti, kitti_out) -> None:
    out, manifest = kitti_out
    bench = Benchmark.load(out)
    assert bench.worlds == ["kitti"] and bench.sequences("kitti") == ["00"]  # 01: no poses
    assert bench.timestamp.tolist() == [float(i) for i in range(30)]  # every scan a place
    got = _read_poses(out / "kitti" / "00" / "poses.csv")
    for i, t in enumerate(kitti["truth"]):
        assert np.allclose(got[float(i)], t, atol=2e-6)
    for i in (0, 7, 29):  # single scans re-projected onto the scene points they hold
        pts = _to_map(bench.load_cloud(i), got[float(i)])
        assert cKDTree(kitti["world"][i]).query(pts)[0].max() <= TOL
    assert manifest["protocol"] == {
        "name": "loop_closure",
        "function": "hotformerloc.eval.evaluate_loop_closure",
        "per": "sequence",
        "threshold": 3.0,
        "skip_time": 10.0,
        "k": 1,
    }
    assert manifest["scale"] == pytest.approx(1 / 20)
    assert set(bench.split) == {"test"}


def test_kitti_loop_closure_with_scan_context(kitti_out) -> None:
    out, manifest = kitti_out
    bench = Benchmark.load(out)
    items = bench.select(world="kitti", sequence="00")
    retr = ScanContextRetriever.from_clouds(
        [bench.load_cloud(i) for i in items], ScanContextConfig(max_radius=20.0)
    )
    p = manifest["protocol"]
    res = evaluate_loop_closure(
        retr,
        np.arange(len(items)),
        bench.xy[items],
        bench.timestamp[items],
        p["threshold"],
        p["skip_time"],
    )
    # revisits (a scan older than 10 s within 3 m): scans 24..29 lie on scans 0..5; scan 23
    # is 15 degrees before scan 0: chord 2 * 10 * sin(7.5 deg) = 2.61 m
    assert res.num_revisits == 7 and res.retrieval.num_skipped == 23
    assert 0.0 <= res.f1max <= 1.0


# --------------------------------------------------------------------------- check_recordings


def _messages(findings: list[tuple[str, str]], severity: str) -> str:
    return "\n".join(m for s, m in findings if s == severity)


def test_check_sequence_layout_reports_each_problem(tmp_path: Path) -> None:
    scene = make_scene((0, 10), (0, 10), lambda x, y: False)
    rng = np.random.default_rng(0)
    poses = [pose(2 + i, 5, 1, 0) for i in range(5)]
    times = np.arange(5.0)
    root = tmp_path / "rec"
    write_sequence(root / "ok", scene, poses, times, "pcd", rng)
    write_sequence(root / "no_poses", scene, poses, times, "pcd", rng)
    (root / "no_poses" / "poses.csv").unlink()
    write_sequence(root / "short", scene, poses, times, "pcd", rng)
    (root / "short" / "poses.csv").write_text(poses_csv(times[:3], poses[:3]))
    write_sequence(root / "nan", scene, poses, times, "npy", rng)
    bad = np.zeros((4, 3), np.float32)
    bad[2, 1] = np.nan
    np.save(root / "nan" / "clouds" / "2.000000.npy", bad)
    write_sequence(root / "trunc", scene, poses, times, "bin", rng)
    (root / "trunc" / "clouds" / "3.000000.bin").write_bytes(b"\0" * 30)
    write_sequence(root / "names", scene, poses, times, "pcd", rng)
    shutil.copy(root / "names" / "clouds" / "0.000000.pcd", root / "names" / "clouds" / "first.pcd")
    write_sequence(root / "ints", scene, poses, times, "npy", rng)
    np.save(root / "ints" / "clouds" / "1.000000.npy", np.zeros((5, 3), np.int32))
    write_sequence(root / "quat", scene, poses, times, "pcd", rng)
    text = (root / "quat" / "poses.csv").read_text().splitlines()
    text[2] = "1.0,3,5,1,0,0,0,0,x"
    (root / "quat" / "poses.csv").write_text("\n".join(text) + "\n")

    findings = check_recordings("sequence", root)
    assert all(s in ("error", "warning", "info") for s, _ in findings)
    errors, warnings, infos = (_messages(findings, s) for s in ("error", "warning", "info"))
    assert "sequence 'no_poses'" in errors and "poses.csv is missing" in errors
    assert "'short': 2 of 5 scans have no pose" in errors
    assert "short': poses.csv has 3 rows for 5 scans" in warnings
    assert "nan/clouds/2.000000.npy: 1 of 4 points have non-finite coordinates" in errors
    assert "trunc/clouds/3.000000.bin: size 30 bytes is not a multiple of 16" in errors
    assert "scan file names must be timestamps" in errors and "first.pcd" in errors
    assert "ints/clouds/1.000000.npy: expected a float array" in errors
    assert "quat/poses.csv: zero quaternion" in errors
    assert "layout 'sequence', 8 sequence folder(s)" in infos
    assert "sequence 'ok': ground, 5 scans (.pcd)" in infos
    assert "'ok'" not in errors
    with pytest.raises(RecordingError, match=r"problem\(s\):.*no_poses"):
        prepare_recordings("sequence", root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_check_kitti_layout_reports_each_problem(tmp_path: Path) -> None:
    root = tmp_path / "kitti"
    rng = np.random.default_rng(0)
    scene = make_scene((-5, 5), (-5, 5), lambda x, y: False)
    truth = [pose(i, 0, 0, 0) for i in range(3)]
    for name in ("00", "01", "02", "03", "04", "05", "06"):
        write_kitti_sequence(root, name, scene, truth, np.arange(3.0), rng, with_poses=name != "06")
    calib = calib_text().splitlines()
    (root / "sequences/00/calib.txt").write_text("\n".join(calib[:4]) + "\n")  # P0..P3, no Tr
    (root / "sequences/01/calib.txt").write_text(
        "\n".join(calib[:4]) + "\nTr: 1 0 0 0 0 1 0 0 0 0 1\n"
    )
    (root / "sequences/02/velodyne/000001.bin").write_bytes(b"\0" * 70)
    lines = (root / "poses/03.txt").read_text().splitlines()
    (root / "poses/03.txt").write_text("\n".join(lines[:2]) + "\n")
    lines = (root / "poses/04.txt").read_text().splitlines()
    lines[1] = row12(np.diag([2.0, 1, 1, 1]))
    (root / "poses/04.txt").write_text("\n".join(lines) + "\n")
    (root / "sequences/05/times.txt").unlink()

    findings = check_recordings("kitti", root)
    errors, infos = _messages(findings, "error"), _messages(findings, "info")
    assert "sequences/00/calib.txt: no 'Tr:' line" in errors
    assert "sequences/01/calib.txt line 5: Tr must hold 12 finite numbers, got 11 numbers" in errors
    assert "sequences/02/velodyne/000001.bin: size 70 bytes is not a multiple of 16" in errors
    assert "poses/03.txt: 2 poses for 3 scans" in errors
    assert (
        "poses/04.txt: non-rigid pose(s): line 2 rotation block is not a proper rotation" in errors
    )
    assert "sequence '05'" in errors and "times.txt is missing" in errors
    assert "sequence '06': no ground-truth poses" in infos
    assert "layout 'kitti', 7 sequence folder(s)" in infos


@pytest.mark.parametrize("layout", ["sequence", "kitti", "velodyne"])
def test_check_never_raises_on_missing_folders(tmp_path: Path, layout: str) -> None:
    findings = check_recordings(layout, tmp_path / "absent")
    assert findings[0][0] == "error"
    expected = "unknown layout 'velodyne'" if layout == "velodyne" else "absent: "
    assert expected in findings[0][1]
    (tmp_path / "empty").mkdir()
    assert any(s == "error" for s, _ in check_recordings(layout, tmp_path / "empty"))


# --------------------------------------------------------------------------- prepare errors


def test_prepare_refuses_existing_output_and_replaces_with_force(tmp_path: Path) -> None:
    scene = make_scene((0, 30), (0, 10), lambda x, y: False)
    root = tmp_path / "rec"
    write_sequence(
        root / "walk",
        scene,
        [pose(5 + 2 * i, 5, 1.5, 0) for i in range(6)],
        np.arange(6.0),
        "pcd",
        np.random.default_rng(0),
    )
    cfg = RecordingConfig.from_sets(["ground.submap={radius: 10, voxel: 0.5, min_points: 20}"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(RecordingError, match="already exists; pass force=True"):
        prepare_recordings("sequence", root, out, config=cfg)
    assert (out / "old.txt").read_text() == "keep me"
    m = prepare_recordings("sequence", root, out, config=cfg, force=True)
    assert not (out / "old.txt").exists() and (out / "rec" / "split.csv").is_file()
    # scans 2 m apart from x = 5, default spacing 3 m: the first scan >= 3 m on is 4 m on
    assert m["counts"]["rec"]["sequences"]["walk"]["submaps"] == 3
    assert Benchmark.load(out).xy[:, 0].tolist() == [5.0, 9.0, 13.0]
    with pytest.raises(RecordingError, match="must not be inside the recordings"):
        prepare_recordings("sequence", root, root / "bench", config=cfg)
    with pytest.raises(RecordingError, match="must not contain the recordings"):
        prepare_recordings("sequence", root, tmp_path, config=cfg, force=True)
    with pytest.raises(RecordingError, match="unknown layout 'nuscenes'"):
        prepare_recordings("nuscenes", root, tmp_path / "o2")
    # a scan that breaks during the build: no output, no temporary folder left behind
    (root / "walk" / "clouds" / "4.000000.pcd").write_bytes(b"# .PCD v0.7\nVERSION 0.7\n")
    with pytest.raises(RecordingError, match=r"'walk'.*4\.000000\.pcd: corrupt PCD header"):
        prepare_recordings("sequence", root, tmp_path / "o3", config=cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "rec"]


def test_nonfinite_points_and_unposed_scans_options(tmp_path: Path) -> None:
    scene = make_scene((0, 30), (0, 10), lambda x, y: False)
    root = tmp_path / "rec"
    poses = [pose(5 + 2 * i, 5, 1.5, 0) for i in range(6)]
    write_sequence(root / "walk", scene, poses, np.arange(6.0), "npy", np.random.default_rng(0))
    path = root / "walk" / "clouds" / "0.000000.npy"
    pts = np.load(path)
    pts[:3] = np.nan
    np.save(path, pts)
    (root / "walk" / "poses.csv").write_text(poses_csv(np.arange(5.0), poses[:5]))
    sub = "ground.submap={radius: 10, voxel: 0.5, min_points: 20}"
    with pytest.raises(RecordingError, match=r"1 of 6 scans have no pose.*5\.000000\.npy"):
        prepare_recordings(
            "sequence", root, tmp_path / "a", config=RecordingConfig.from_sets([sub])
        )
    cfg = RecordingConfig.from_sets([sub, "poses.skip_unposed=true"])
    with pytest.raises(RecordingError, match=r"0\.000000\.npy: 3 of \d+ points have non-finite"):
        prepare_recordings("sequence", root, tmp_path / "b", config=cfg)
    cfg = RecordingConfig.from_sets([sub, "poses.skip_unposed=true", "drop_nonfinite=true"])
    m = prepare_recordings("sequence", root, tmp_path / "c", config=cfg)
    assert m["counts"]["rec"]["sequences"]["walk"]["scans"] == 5
    assert any("have no pose" in w and "skipped" in w for w in m["warnings"])


def test_normalised_submaps_and_sequence_selection(tmp_path: Path) -> None:
    scene = make_scene((0, 30), (0, 10), lambda x, y: False)
    root = tmp_path / "rec"
    poses = [pose(5 + 2 * i, 5, 1.5, 0) for i in range(6)]
    for name in ("walk", "other"):
        write_sequence(root / name, scene, poses, np.arange(6.0), "pcd", np.random.default_rng(0))
    sub = "ground.submap={radius: 10, voxel: 0.5, min_points: 20, normalise: true}"
    cfg = RecordingConfig.from_sets([sub, "sequences=[walk]", "world=site"])
    m = prepare_recordings("sequence", root, tmp_path / "out", config=cfg)
    assert m["scale"] is None and list(m["counts"]["site"]["sequences"]) == ["walk"]
    bench = Benchmark.load(tmp_path / "out")
    for i in range(len(bench)):  # PNV normalisation: centroid 0, mean distance 0.5, in [-1, 1]
        c = bench.load_cloud(i)
        assert np.abs(c).max() <= 1 and np.allclose(c.mean(0), 0, atol=0.05)
    cfg = RecordingConfig.from_sets(["sequences=[walk, lost]"])
    with pytest.raises(RecordingError, match=r"sequences names unknown sequence\(s\) lost"):
        prepare_recordings("sequence", root, tmp_path / "o2", config=cfg)
    (root / "sky").mkdir()
    write_pointcloud(root / "sky" / "map.npy", PointCloud(scene))
    with pytest.raises(RecordingError, match="mixes metric and normalised"):
        prepare_recordings(
            "sequence", root, tmp_path / "o3", config=RecordingConfig.from_sets([sub])
        )


# --------------------------------------------------------------------------- real data


def test_hilti_fragment_converts(tmp_path: Path, shared_data: Path) -> None:
    src = shared_data / "hilti2023_fragment_sova"
    if not src.is_dir():
        pytest.skip(f"{src} is absent")
    seq = tmp_path / "hilti" / "sova"
    (seq / "clouds").mkdir(parents=True)
    mats = [np.loadtxt(src / "poses" / f"{i}.txt") for i in range(30)]
    times = 0.1 * np.arange(30)  # index-named scans at an assumed 10 Hz
    for i in range(30):
        (seq / "clouds" / f"{i}.pcd").symlink_to(src / "clouds" / f"{i}.pcd")
    (seq / "times.txt").write_text("".join(f"{t:.1f}\n" for t in times))
    (seq / "poses.csv").write_text(poses_csv(times, mats))
    assert not _messages(check_recordings("sequence", seq.parent), "error")
    cfg = RecordingConfig.from_sets(
        [
            "ground.spacing=1",
            "ground.window=1",
            "ground.submap={radius: 12, remove_ground: false, voxel: 0.2, min_points: 100}",
        ]
    )
    out = tmp_path / "bench"
    prepare_recordings("sequence", seq.parent, out, config=cfg)
    bench = Benchmark.load(out)
    # 3.5 m of travel (most of it after scan 9) with 1 m spacing
    assert 3 <= len(bench) <= 5
    raw = np.concatenate(
        [_to_map(read_pointcloud(src / "clouds" / f"{i}.pcd").xyz, mats[i]) for i in range(30)]
    )
    tree = cKDTree(raw)
    poses = _read_poses(out / "hilti" / "sova" / "poses.csv")
    for i in range(len(bench)):
        t = float(bench.timestamp[i])
        assert np.allclose(poses[t], mats[round(t * 10)], atol=1e-5)
        pts = _to_map(bench.load_cloud(i), poses[t])
        assert tree.query(pts)[0].max() <= 0.2 * math.sqrt(3) + 1e-3
