"""Embedding files with loader worker processes (``embed_files`` / ``embed_places`` /
``build_database`` with ``workers`` > 0) against the in-process path and the model's own
``HOTFormerLoc.embed``: same descriptors, same named errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cli_helpers import run_cli as cli
from hotformerloc import create_model
from hotformerloc.index import (
    DatabaseInputError,
    Embedder,
    ModelInfo,
    PlaceDatabase,
    build_database,
    embed_places,
    load_embedder,
    scan_places,
)
from hotformerloc.index.pipeline import embed_files
from hotformerloc.io import PointCloud, PointCloudError, write_pointcloud
from hotformerloc.octree import OctreeInputError

BATCH = 2


def cloud(seed: int, n: int) -> np.ndarray:
    """A metric (n, 3) float32 cloud, 40 m wide and 8 m high."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(-20, 20, (n, 3)) * [1, 1, 0.2]).astype(np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Five clouds of different sizes (the last batch of 2 is short)."""
    root = tmp_path_factory.mktemp("embed_workers") / "clouds"
    root.mkdir()
    for i, n in enumerate((900, 1500, 400, 1200, 700)):
        write_pointcloud(root / f"{i}.pcd", PointCloud(cloud(i, n)))
    return root


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("hotformerloc-tiny")


def reference(embedder: Embedder, paths: list, batch: int) -> np.ndarray:
    """The serial path: ``HOTFormerLoc.embed`` per batch of raw clouds, L2-normalised."""
    from hotformerloc.io import read_pointcloud

    out = []
    for a in range(0, len(paths), batch):
        clouds = [torch.from_numpy(read_pointcloud(p).xyz) for p in paths[a : a + batch]]
        with torch.inference_mode():
            out.append(F.normalize(embedder.model.embed(clouds).float(), dim=1).numpy())
    return np.concatenate(out)


def test_workers_give_the_serial_descriptors(folder, embedder):
    paths = sorted(folder.iterdir())
    ref = reference(embedder, paths, BATCH)
    assert ref.shape == (5, embedder.dim) and not np.allclose(ref[0], ref[1], atol=1e-3)
    calls: dict[int, list] = {}
    for workers in (0, 2):
        got = embed_files(
            embedder,
            paths,
            BATCH,
            lambda d, n, w=workers: calls.setdefault(w, []).append((d, n)),
            workers,
        )
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    assert calls[0] == calls[2] == [(2, 5), (4, 5), (5, 5)]
    # Embedder.embed (queries, ``embed``) is the same in-process pipeline.
    from hotformerloc.io import read_pointcloud

    first = [read_pointcloud(p).xyz for p in paths[:BATCH]]
    np.testing.assert_allclose(embedder.embed(first), ref[:BATCH], rtol=0, atol=1e-6)


def test_build_database_with_workers_stores_the_same_descriptors(folder, embedder, tmp_path):
    entries = scan_places(folder)
    a = build_database(tmp_path / "a", embedder, entries, BATCH, workers=0)
    b = build_database(tmp_path / "b", embedder, entries, 3, workers=1)
    np.testing.assert_allclose(b.descriptors, a.descriptors, rtol=0, atol=1e-6)
    assert [e.id for e in a.entries()] == [e.id for e in b.entries()]
    code, _, err = cli(
        "db", "build", "-m", "hotformerloc-tiny", "-d", folder, "-o", tmp_path / "c",
        "--batch-size", "2", "--workers", "2", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    np.testing.assert_allclose(
        PlaceDatabase.open(tmp_path / "c").descriptors, a.descriptors, rtol=0, atol=1e-6
    )


def one_line_error(embedder: Embedder, paths: list, workers: int) -> BaseException:
    with pytest.raises((PointCloudError, OctreeInputError)) as info:
        embed_files(embedder, paths, BATCH, None, workers)
    assert "\n" not in str(info.value) and "DataLoader" not in str(info.value)
    return info.value


@pytest.mark.parametrize("bad", ["missing", "corrupt", "empty", "nan"])
def test_a_bad_file_in_a_worker_raises_its_named_error(folder, embedder, tmp_path, bad):
    target = tmp_path / f"{bad}.bin"
    if bad == "corrupt":
        target.write_bytes(b"abc")
    elif bad == "empty":
        target.write_bytes(b"")
    elif bad == "nan":
        xyzi = np.ones((50, 4), np.float32)
        xyzi[7, 1] = np.nan
        xyzi.tofile(target)
    good = sorted(folder.iterdir())
    paths = [*good[:3], target, good[3]]  # the 2nd batch holds the bad file
    serial = one_line_error(embedder, paths, 0)
    parallel = one_line_error(embedder, paths, 2)
    assert type(parallel) is type(serial) is PointCloudError
    assert str(parallel) == str(serial) and str(parallel).startswith(f"{target}: ")


def test_an_unusable_cloud_in_a_worker_raises_octree_input_error(folder, tmp_path):
    """Without normalisation, a cloud far outside the unit cube has no point left."""
    model = create_model("hotformerloc-tiny", normalize_points=False)
    embedder = Embedder(model, ModelInfo("tiny-raw", "0" * 64, "tiny-raw", None))
    far = tmp_path / "far.npy"
    np.save(far, np.full((20, 3), 1e4, np.float32))
    near = tmp_path / "near.npy"
    np.save(near, cloud(9, 300) / 40)
    serial = one_line_error(embedder, [near, far], 0)
    parallel = one_line_error(embedder, [near, far], 1)
    assert type(parallel) is type(serial) is OctreeInputError
    assert (
        str(parallel) == str(serial) == f"{far}: no point inside the unit cube after normalisation"
    )


def test_bad_arguments(folder, embedder):
    entries = scan_places(folder)
    with pytest.raises(DatabaseInputError, match="workers must be >= 0"):
        embed_places(embedder, entries, BATCH, workers=-1)
    with pytest.raises(DatabaseInputError, match="batch must be >= 1"):
        embed_places(embedder, entries, 0, workers=1)
    assert embed_places(embedder, [], BATCH, workers=2).shape == (0, embedder.dim)
