"""The benchmark generator: determinism, resumability, layout, splits and revisits."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from hotformerloc.config import ConfigError, from_dict
from hotformerloc.io import read_pointcloud
from hotformerloc.io.poses import rotation_to_quaternion
from hotformerloc.io.splits import assign_splits
from hotformerloc.synth.config import GeneratorConfig, load_generator_config
from hotformerloc.synth.generate import generate, rot_zyx

TINY = {
    "seed": 3,
    "ground": {
        "spacing": 15.0,
        "window": 2.0,
        "scans": 2,
        "submap": {"radius": 25.0, "min_points": 200},
    },
    "aerial": {
        "grid": 25.0,
        "sensor": {"pulse_density": 0.6, "max_returns": 2},
        "submap": {"radius": 25.0, "min_points": 200},
    },
    "split": {"regions": 1, "region_size": 60.0, "buffer": 20.0},
    "worlds": [
        {
            "name": "forest",
            "kind": "forest",
            "params": {
                "size_x": 150.0,
                "size_y": 150.0,
                "route_length": 250.0,
                "route_margin": 30.0,
            },
            "traversals": [
                {"name": "ground_a", "sensor": {"beams": 16, "columns": 360}},
                {
                    "name": "ground_b",
                    "reverse": True,
                    "lateral_offset": 2.0,
                    "sensor": {"beams": 32, "columns": 360},
                    "epoch": {"leaf_off": True, "seed": 5},
                },
            ],
        }
    ],
}


def tiny(seed: int = 3) -> GeneratorConfig:
    return from_dict(GeneratorConfig, {**TINY, "seed": seed})


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    res = generate(tiny(), out, workers=2)
    return out, json.loads(res.manifest.read_text())


def test_layout_matches_cs_wild_places(bench):
    out, manifest = bench
    world = out / "forest"
    for seq in ("ground_a", "ground_b", "aerial"):
        rows = list(csv.DictReader((world / seq / "poses.csv").read_text().splitlines()))
        assert list(rows[0]) == ["timestamp", "x", "y", "z", "qx", "qy", "qz", "qw"]
        files = sorted(p.name for p in (world / seq / "clouds").glob("*.pcd"))
        assert files == sorted(f"{r['timestamp']}.pcd" for r in rows)
        # the PCD VIEWPOINT carries the same pose as poses.csv
        r = rows[len(rows) // 2]
        cloud = read_pointcloud(world / seq / "clouds" / f"{r['timestamp']}.pcd")
        assert cloud.pose is not None or seq == "aerial"
        pose = cloud.pose if cloud.pose is not None else np.eye(4)
        assert np.allclose(pose[:3, 3], [float(r["x"]), float(r["y"]), float(r["z"])], atol=1e-3)
        assert np.allclose(
            np.abs(
                rotation_to_quaternion(pose[:3, :3])
                @ [float(r[k]) for k in ("qx", "qy", "qz", "qw")]
            ),
            1.0,
            atol=1e-4,
        )
        # crop radius and voxel downsampling hold in the submap frame
        assert np.hypot(cloud.xyz[:, 0], cloud.xyz[:, 1]).max() <= 25.0 + 0.5
        assert len(cloud) >= 200
    assert set(manifest["files"]) == {
        p.relative_to(out).as_posix() for p in world.rglob("*") if p.is_file()
    }
    assert manifest["seed"] == 3 and manifest["config"]["seed"] == 3
    assert not list(out.rglob("*.tmp-*"))


def test_every_test_query_has_aerial_and_ground_revisits(bench):
    out, manifest = bench
    rows = list(csv.DictReader((out / "forest" / "split.csv").read_text().splitlines()))
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    seq = np.array([r["sequence"] for r in rows])
    src = np.array([r["source"] for r in rows])
    split = np.array([r["split"] for r in rows])
    queries = np.flatnonzero((src == "ground") & (split == "test"))
    assert len(queries) >= 3
    for q in queries:
        d = np.linalg.norm(xy - xy[q], axis=1)
        assert np.any((src == "aerial") & (d <= 15.0)), "no aerial submap within 15 m"
        assert np.any((src == "ground") & (seq != seq[q]) & (d <= 15.0)), "no ground revisit"
    rep = manifest["revisits"]["forest"]
    assert rep["queries"] == len(queries) == rep["with_aerial_within"] == rep["with_ground_within"]
    # revisits share far more geometry (true poses) than far submaps overlaid by chance
    ov = rep["overlap"]
    assert ov["median_overlap_ground"] > ov["median_overlap_ground_far"] + 0.2
    assert ov["median_overlap_aerial"] > ov["median_overlap_aerial_far"] + 0.1
    # nothing in the buffer is a training submap, and buffers sit next to test queries
    for b in np.flatnonzero(split == "buffer"):
        d = np.linalg.norm(xy[queries] - xy[b], axis=1)
        assert d.min() <= 20.0


def test_same_seed_is_byte_identical_and_other_seed_differs(bench, tmp_path):
    _, manifest = bench
    again = generate(tiny(), tmp_path / "again", workers=1)
    m2 = json.loads(again.manifest.read_text())
    assert m2["files"] == manifest["files"]
    other = generate(tiny(seed=4), tmp_path / "other", workers=2)
    m3 = json.loads(other.manifest.read_text())
    common = set(m3["files"]) & set(manifest["files"])
    assert any(m3["files"][k] != manifest["files"][k] for k in common) or not common


def test_rerun_is_idempotent_and_other_config_is_refused(bench):
    out, manifest = bench
    res = generate(tiny(), out, workers=1)
    assert res.generated == 0 and res.skipped_existing > 0
    assert json.loads(res.manifest.read_text())["files"] == manifest["files"]
    with pytest.raises(ConfigError, match="another config"):
        generate(tiny(seed=9), out, workers=1)


def test_resume_after_kill_gives_identical_output(bench, tmp_path):
    _, manifest = bench
    out = tmp_path / "killed"
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    cmd = [
        sys.executable,
        "-m",
        "hotformerloc.cli.main",
        "generate",
        "--config",
        str(cfg_path),
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.rglob("*.pcd"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "killed too late to test resuming"
    done_before = len(list(out.rglob("*.pcd")))
    assert done_before >= 3
    res = generate(tiny(), out, workers=2)
    assert res.skipped_existing >= done_before
    assert json.loads(res.manifest.read_text())["files"] == manifest["files"]
    assert not list(out.rglob("*.tmp-*"))


def test_splits_by_hand():
    xy = np.array([[0, 0], [10, 0], [40, 0], [100, 0], [5, 5]], float)
    ground = np.array([True, True, True, True, False])
    region = [[[-5, -5], [15, -5], [15, 5], [-5, 5], [-5, -5]]]
    split = assign_splits(xy, ground, region, buffer=30.0, shape="box")  # the generator's
    assert split.tolist() == ["test", "test", "buffer", "train", "test"]


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ground: {spacingg: 3}\n")
    with pytest.raises(ConfigError, match="spacingg"):
        load_generator_config(config=bad)
    with pytest.raises(ConfigError, match="beams"):
        from_dict(
            GeneratorConfig,
            {
                **TINY,
                "worlds": [
                    {
                        **TINY["worlds"][0],
                        "traversals": [
                            {"name": "ground_a", "sensor": {"beams": 7}},
                            {"name": "ground_b"},
                        ],
                    }
                ],
            },
        )
    bad_world = {**TINY["worlds"][0], "params": {"tree_densty": 3.0}}
    with pytest.raises(ConfigError, match=r"worlds\[0\]\.params\.tree_densty"):
        generate(from_dict(GeneratorConfig, {**TINY, "worlds": [bad_world]}), tmp_path / "o")
    assert not (tmp_path / "o" / "manifest.json").exists()
    with pytest.raises(ConfigError, match="unknown preset"):
        load_generator_config(preset="huge")
    with pytest.raises(ConfigError, match="not valid YAML"):
        (tmp_path / "broken.yaml").write_text("a: [1, 2\n")
        load_generator_config(config=tmp_path / "broken.yaml")


@pytest.mark.parametrize("preset", ["demo", "small", "large"])
def test_presets_load(preset):
    cfg = load_generator_config(preset=preset)
    assert {w.kind for w in cfg.worlds} >= {"forest", "urban"}
    assert all(len(w.traversals) >= 3 for w in cfg.worlds)


def test_no_preset_and_no_config_is_the_demo_preset():
    assert load_generator_config() == load_generator_config(preset="demo")


def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        r = rot_zyx(*rng.uniform(-3, 3, 3))
        x, y, z, w = rotation_to_quaternion(r)
        back = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        np.testing.assert_allclose(back, r, atol=1e-9)


def test_real_geometry_world_end_to_end(shared_data, tmp_path):
    """A world built from the real Autzen aerial survey: aerial submaps are crops of the real
    points, ground submaps are ray-cast into its terrain + voxel model."""
    from test_worlds import REAL_CROP, REAL_ROUTE

    src = shared_data / "autzen_2010_als" / "autzen_2010_points.npz"
    cfg = {
        **TINY,
        "split": {"regions": 1, "region_size": 50.0, "buffer": 20.0},
        "worlds": [
            {
                "name": "autzen",
                "kind": "real",
                "params": {
                    "source": str(src),
                    "crop": list(REAL_CROP),
                    "route": [list(p) for p in REAL_ROUTE],
                },
                "traversals": [
                    {
                        "name": "ground_a",
                        "platform": {"kind": "vehicle", "height": 1.9},
                        "sensor": {"beams": 32, "columns": 360},
                    },
                    {"name": "ground_b", "reverse": True, "sensor": {"beams": 16, "columns": 360}},
                ],
            }
        ],
    }
    res = generate(from_dict(GeneratorConfig, cfg), tmp_path / "real", workers=2)
    counts = res.counts["autzen"]
    assert counts["ground_a"] >= 3 and counts["ground_b"] >= 3 and counts["aerial"] >= 4
    assert res.revisits["autzen"]["queries"] == res.revisits["autzen"]["with_ground_within"]
    # aerial submaps hold real survey points: every point is a (voxelised) survey point,
    # so their density follows the survey, and the crop is within the radius
    world = tmp_path / "real" / "autzen"
    cloud = read_pointcloud(next((world / "aerial" / "clouds").glob("*.pcd")))
    assert np.hypot(cloud.xyz[:, 0], cloud.xyz[:, 1]).max() <= 25.0 + 0.5
    ground = read_pointcloud(next((world / "ground_a" / "clouds").glob("*.pcd")))
    assert ground.pose is not None and len(ground) >= 200


def test_known_discards_are_not_recomputed_and_cache_is_removed(tmp_path, monkeypatch):
    import hotformerloc.synth.generate as gen

    data = {**TINY, "aerial": {**TINY["aerial"], "submap": {"radius": 25.0, "min_points": 10**7}}}
    cfg = from_dict(GeneratorConfig, data)
    first = generate(cfg, tmp_path / "d", workers=1)
    n_aerial = sum(1 for _ in gen.plan_aerial(cfg, 0, gen._make_world(cfg, 0)))
    assert first.discarded == n_aerial and first.counts["forest"]["discarded"] == n_aerial
    assert not (tmp_path / "d" / ".cache").exists()

    def no_survey(*args, **kwargs):
        raise AssertionError("survey recomputed")

    monkeypatch.setattr(gen, "aerial_survey", no_survey)
    again = generate(cfg, tmp_path / "d", workers=1)
    assert again.generated == 0 and again.discarded == n_aerial
    assert json.loads(again.manifest.read_text()) == json.loads(first.manifest.read_text())
