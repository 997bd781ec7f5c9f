"""Benchmark.load on a tiny on-disk benchmark: order, fields, paths, selection, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hotformerloc.data import Benchmark, DatasetError
from hotformerloc.io import PointCloud, write_pointcloud

HEADER = "sequence,timestamp,x,y,source,split\n"
# (sequence, timestamp, source, split); deliberately unsorted, 9 < 10 numerically only.
ROWS = [
    ("ground_b", 10.0, "ground", "train"),
    ("ground_a", 10.0, "ground", "test"),
    ("aerial", 3.5, "aerial", "train"),
    ("ground_a", 9.0, "ground", "buffer"),
    ("ground_b", 9.5, "ground", "train"),
]


def write_benchmark(root: Path, worlds: tuple[str, ...] = ("beta", "alpha")) -> Path:
    """Two worlds, two ground sequences + aerial; cloud of row k has k+5 points at x = k."""
    for w, world in enumerate(worlds):
        lines = [HEADER]
        for k, (seq, ts, source, split) in enumerate(ROWS):
            xyz = np.zeros((k + 5, 3), np.float32)
            xyz[:, 0] = k
            xyz[:, 2] = np.arange(k + 5)
            path = root / world / seq / "clouds" / f"{ts:.6f}.pcd"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_pointcloud(path, PointCloud(xyz, source=source), format="pcd")
            lines.append(f"{seq},{ts:.6f},{100 * w + k}.5,{-k},{source},{split}\n")
        (root / world / "split.csv").write_text("".join(lines))
    (root / "not_a_world").mkdir()
    return root


def test_load_order_and_fields(tmp_path: Path) -> None:
    bench = Benchmark.load(write_benchmark(tmp_path))
    assert len(bench) == 10
    assert bench.worlds == ["alpha", "beta"]
    assert bench.sequences("alpha") == ["aerial", "ground_a", "ground_b"]
    assert bench.world.tolist() == ["alpha"] * 5 + ["beta"] * 5
    order = ["aerial", "ground_a", "ground_a", "ground_b", "ground_b"]
    assert bench.sequence.tolist() == order * 2
    assert bench.timestamp.tolist() == [3.5, 9.0, 10.0, 9.5, 10.0] * 2
    assert bench.timestamp.dtype == np.float64 and bench.xy.shape == (10, 2)
    # rows of alpha (world index 1 in write order) are ROWS[2, 3, 1, 4, 0]
    assert bench.xy[:5, 0].tolist() == [102.5, 103.5, 101.5, 104.5, 100.5]
    assert bench.xy[:5, 1].tolist() == [-2, -3, -1, -4, 0]
    assert bench.source.tolist()[:5] == ["aerial"] + ["ground"] * 4
    assert bench.split.tolist()[:5] == ["train", "buffer", "test", "train", "train"]
    assert bench.path(1) == tmp_path / "alpha" / "ground_a" / "clouds" / "9.000000.pcd"


def test_load_cloud_and_select(tmp_path: Path) -> None:
    bench = Benchmark.load(write_benchmark(tmp_path))
    cloud = bench.load_cloud(1)  # ROWS[3]: 8 points at x = 3
    assert cloud.dtype == np.float32 and cloud.shape == (8, 3)
    assert np.all(cloud[:, 0] == 3)
    assert bench.select(world="beta", source="ground", split="train").tolist() == [8, 9]
    assert bench.select(split=["test", "buffer"]).tolist() == [1, 2, 6, 7]
    assert bench.select(sequence="aerial").tolist() == [0, 5]
    assert bench.select().dtype == np.int64
    with pytest.raises(ValueError, match="unknown split"):
        bench.select(split="val")


def test_root_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        Benchmark.load(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"no world folder with a split\.csv"):
        Benchmark.load(tmp_path)


def test_missing_cloud_files(tmp_path: Path) -> None:
    root = write_benchmark(tmp_path)
    for name in ("9.000000.pcd", "10.000000.pcd"):
        (root / "beta" / "ground_a" / "clouds" / name).unlink()
    with pytest.raises(DatasetError, match="2 cloud file") as err:
        Benchmark.load(root)
    assert "beta/ground_a/clouds/9.000000.pcd" in str(err.value)
    bench = Benchmark.load(root, check_files=False)
    with pytest.raises(DatasetError, match=r"cloud 6 .*9\.000000\.pcd"):
        bench.load_cloud(6)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("sequence,timestamp,x,source,split\n", r"missing column\(s\) y"),
        (HEADER + "ground_a,1.0,2.0,3.0,ground,train\nground_a,oops,2,3,ground,train\n",
         r"line 3: timestamp 'oops' is not a number"),
        (HEADER + "ground_a,1.0,2.0,nan,ground,train\n", r"line 2: y 'nan' is not finite"),
        (HEADER + "ground_a,1.0,2.0\n", r"line 2: too few fields"),
        (HEADER + "ground_a,1.0,2.0,3.0,satellite,train\n", r"line 2: source 'satellite'"),
        (HEADER + "ground_a,1.0,2.0,3.0,ground,val\n", r"line 2: split 'val'"),
        (HEADER + "g,1.0,2.0,3.0,ground,train\ng,1.0,5.0,3.0,ground,test\n", r"duplicate row"),
    ],
)  # fmt: skip
def test_bad_csv(tmp_path: Path, text: str, pattern: str) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "split.csv").write_text(text)
    with pytest.raises(DatasetError, match=pattern) as err:
        Benchmark.load(tmp_path, check_files=False)
    assert str(tmp_path / "w" / "split.csv") in str(err.value)
