"""A tiny on-disk benchmark of distinct places seen by two ground sequences and an aerial one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hotformerloc.io import PointCloud, write_pointcloud

SEQUENCES = ("aerial", "ground_01", "ground_02")


def view_yaw(place: int, view: int, n: int = 300) -> float:
    """The yaw (radians) by which :func:`place_cloud` turned the place's layout."""
    rng = np.random.default_rng([place, view])
    rng.integers(0, 4, n)
    rng.uniform(0, 1, (n, 3))
    return float(rng.uniform(-np.pi, np.pi))


def place_cloud(place: int, view: int, n: int = 300) -> np.ndarray:
    """(n, 3) metric cloud of ``place`` (boxes of a place-seeded layout), observed by ``view``
    (own noise and yaw)."""
    layout = np.random.default_rng(1000 + place)
    rng = np.random.default_rng([place, view])
    centres = layout.uniform(-15, 15, (4, 2))
    sizes = layout.uniform(1, 6, (4, 3))
    which = rng.integers(0, 4, n)
    pts = (
        np.concatenate([centres[which], np.zeros((n, 1))], 1)
        + rng.uniform(0, 1, (n, 3)) * sizes[which]
    )
    yaw = rng.uniform(-np.pi, np.pi)
    c, s = np.cos(yaw), np.sin(yaw)
    pts[:, :2] = pts[:, :2] @ np.array([[c, -s], [s, c]]).T
    return (pts + rng.normal(0, 0.05, pts.shape)).astype(np.float32)


def write_place_benchmark(
    root: Path, places: int = 8, test_places: int = 2, aerial_at_test: bool = True
) -> Path:
    """One world ``w``; place p sits at x = 100 p; places < ``test_places`` are test.
    ``aerial_at_test`` False: no aerial submap at the test places (queries without a
    true neighbour in the aerial database). Each sequence's ``poses.csv`` holds the heading
    that turns its clouds back to the layout's orientation."""
    lines = ["sequence,timestamp,x,y,source,split\n"]
    for v, seq in enumerate(SEQUENCES):
        poses = ["timestamp,x,y,z,qx,qy,qz,qw\n"]
        source = "aerial" if seq == "aerial" else "ground"
        for p in range(places):
            if seq == "aerial" and p < test_places and not aerial_at_test:
                continue
            ts = 1000.0 * v + p
            path = root / "w" / seq / "clouds" / f"{ts:.6f}.pcd"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_pointcloud(path, PointCloud(place_cloud(p, v), source=source), format="pcd")
            split = "test" if p < test_places else "train"
            lines.append(f"{seq},{ts:.6f},{100.0 * p + v},0.0,{source},{split}\n")
            half = -view_yaw(p, v) / 2
            poses.append(f"{ts:.6f},{100.0 * p + v},0,0,0,0,{np.sin(half)},{np.cos(half)}\n")
        (root / "w" / seq / "poses.csv").write_text("".join(poses))
    (root / "w" / "split.csv").write_text("".join(lines))
    return root
