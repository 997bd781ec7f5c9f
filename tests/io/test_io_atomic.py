"""Atomic writes: the final name holds the old content or the complete new one, never less."""

import os
from pathlib import Path

import laspy
import numpy as np
import pypcd4
import pytest

from hotformerloc.io import (
    PointCloud,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    read_pointcloud,
    write_pointcloud,
)


def test_bytes_and_text(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "héllo\r\n")
    assert target.read_bytes() == "héllo\r\n".encode()
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_exception_in_block_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith("a.bin.tmp-") and tmp.exists()
        tmp.write_bytes(b"new but incomplete")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_failed_rename_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(src: object, dst: object) -> None:
        raise OSError("rename refused")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="rename refused"):
        atomic_write_bytes(tmp_path / "a.bin", b"data")
    assert list(tmp_path.iterdir()) == []


def _half_then_fail_pcd(self: pypcd4.PointCloud, fp: object, **kwargs: object) -> None:
    fp.write(b"# .PCD v0.7 - half a file")  # type: ignore[attr-defined]
    raise RuntimeError("disk died mid-way")


def _half_then_fail_las(self: laspy.LasData, fp: object, **kwargs: object) -> None:
    fp.write(b"LASF")  # type: ignore[attr-defined]
    raise RuntimeError("disk died mid-way")


@pytest.mark.parametrize(
    ("name", "owner", "method", "failing"),
    [
        ("cloud.pcd", pypcd4.PointCloud, "save", _half_then_fail_pcd),
        ("cloud.laz", laspy.LasData, "write", _half_then_fail_las),
    ],
)
def test_writer_failing_midway_leaves_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    owner: type,
    method: str,
    failing: object,
) -> None:
    cloud = PointCloud(np.ones((10, 3)))
    monkeypatch.setattr(owner, method, failing)
    with pytest.raises(RuntimeError, match="mid-way"):
        write_pointcloud(tmp_path / name, cloud)
    assert list(tmp_path.iterdir()) == []


def test_writer_failing_midway_keeps_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "cloud.pcd"
    write_pointcloud(target, PointCloud(np.ones((3, 3))))
    monkeypatch.setattr(pypcd4.PointCloud, "save", _half_then_fail_pcd)
    with pytest.raises(RuntimeError):
        write_pointcloud(target, PointCloud(np.zeros((5, 3))))
    assert len(read_pointcloud(target)) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["cloud.pcd"]


def test_remove_stale_temporaries_deletes_only_writer_leftovers(tmp_path: Path) -> None:
    from hotformerloc.io.atomic import remove_stale_temporaries

    (tmp_path / "w" / "seq").mkdir(parents=True)
    stale = [tmp_path / "a.pcd.tmp-0123456789ab", tmp_path / "w" / "seq" / "b.csv.tmp-abcdef012345"]
    kept = [
        tmp_path / "a.pcd",
        tmp_path / "notes.tmp-draft",  # not a writer's name
        tmp_path / "c.pcd.tmp-0123456789abc",  # 13 hex digits
    ]
    for p in stale + kept:
        p.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == 2
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    # the writer's own temporary names are the ones recognised
    with atomic_write(tmp_path / "d.pcd") as tmp:
        tmp.write_bytes(b"y")
        assert remove_stale_temporaries(tmp_path) == 1 and not tmp.exists()
        tmp.write_bytes(b"y")
    assert (tmp_path / "d.pcd").read_bytes() == b"y"
