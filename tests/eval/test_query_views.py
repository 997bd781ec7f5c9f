"""Query views: the multi-view retriever equals a brute-force min over views, view
descriptors equal embeddings of rotated clouds, and co-oriented loading (headings from
``poses.csv``) brings clouds to the world's orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hotformerloc import create_model
from hotformerloc.data import Benchmark, SubmapDataset
from hotformerloc.data.augment import AugmentConfig, augment_set
from hotformerloc.data.benchmark import DatasetError
from hotformerloc.eval import DescriptorRetriever, QueryViewRetriever
from hotformerloc.eval.benchmark import embed_benchmark, embed_query_views, query_rows
from hotformerloc.io import PointCloud, write_pointcloud


def _rot(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _brute(desc, items, views, query, database, k, exclude):
    """Min over views of the L2 distance, ties by lower database position."""
    out_i, out_d = [], []
    for j, q in enumerate(query):
        qv = views[list(items).index(q)] if q in items else desc[q][None]
        d = np.linalg.norm(qv[:, None, :] - desc[database][None], axis=2).min(0)
        if exclude is not None:
            d[exclude[j]] = np.inf
        order = [m for m in np.lexsort((np.arange(len(d)), d)) if np.isfinite(d[m])][:k]
        out_i.append(order + [-1] * (k - len(order)))
        out_d.append([d[m] for m in order] + [np.inf] * (k - len(order)))
    return np.array(out_i), np.array(out_d)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_view_retriever_equals_brute_force(k: int) -> None:
    rng = np.random.default_rng(k)
    desc = rng.normal(size=(30, 8))
    items = np.array([3, 7, 11, 12])
    views = rng.normal(size=(4, 5, 8))
    views[1, 2] = desc[20]  # one view of item 7 equals database item 20
    query = np.array([7, 3, 0, 12])
    database = np.arange(13, 30)
    exclude = rng.random((4, len(database))) < 0.2
    exclude[0, 20 - 13] = False
    got = QueryViewRetriever(desc, items, views).rank(query, database, k, exclude)
    ref_i, ref_d = _brute(desc, items, views, query, database, k, exclude)
    np.testing.assert_array_equal(got.indices, ref_i)
    np.testing.assert_allclose(got.distances, ref_d, atol=1e-6)
    assert got.indices[0, 0] == 20 - 13 and got.distances[0, 0] == pytest.approx(0, abs=1e-6)


def test_one_view_equals_descriptor_retriever() -> None:
    rng = np.random.default_rng(0)
    desc = rng.normal(size=(20, 4))
    items = np.arange(5)
    one = QueryViewRetriever(desc, items, desc[items][:, None, :])
    a = one.rank(items, np.arange(5, 20), 6)
    b = DescriptorRetriever(desc).rank(items, np.arange(5, 20), 6)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.distances, b.distances, atol=1e-9)


def test_view_retriever_rejects_bad_shapes() -> None:
    desc = np.zeros((4, 3))
    with pytest.raises(ValueError, match="views must be"):
        QueryViewRetriever(desc, np.array([0, 1]), np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="distinct"):
        QueryViewRetriever(desc, np.array([1, 1]), np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="item indices"):
        QueryViewRetriever(desc, np.array([4]), np.zeros((1, 2, 3)))


def _cloud(seed: int, n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-20, 20, (4, 2))
    which = rng.integers(0, 4, n)
    pts = np.concatenate([centres[which], np.zeros((n, 1))], 1) + rng.uniform(0, 3, (n, 3))
    return pts.astype(np.float32)


def _bench(root: Path, world_clouds: list[np.ndarray], headings_deg: list[float]) -> Benchmark:
    """One ground sequence; cloud i is stored in a submap frame turned by its heading."""
    clouds = root / "w" / "ground_01" / "clouds"
    clouds.mkdir(parents=True)
    split, poses = ["sequence,timestamp,x,y,source,split"], ["timestamp,x,y,z,qx,qy,qz,qw"]
    for i, (c, h) in enumerate(zip(world_clouds, headings_deg, strict=True)):
        ts = 1.0 + i
        split.append(f"ground_01,{ts:.6f},{10.0 * i},0,ground,test")
        cz, sz = np.cos(np.radians(h) / 2), np.sin(np.radians(h) / 2)
        cx, sx = np.cos(0.02), np.sin(0.02)  # Rz(h) Rx(roll): only the yaw is undone
        poses.append(f"{ts:.6f},{10.0 * i},0,0,{cz * sx},{sz * sx},{sz * cx},{cz * cx}")
        local = (c @ _rot(h)).astype(np.float32)  # R(h)^T applied to each row
        write_pointcloud(clouds / f"{ts:.6f}.pcd", PointCloud(local))
    (root / "w" / "split.csv").write_text("\n".join(split) + "\n")
    (root / "w" / "ground_01" / "poses.csv").write_text("\n".join(poses) + "\n")
    return Benchmark.load(root)


def test_align_yaw_turns_clouds_to_the_world(tmp_path: Path) -> None:
    world = [_cloud(s) for s in range(3)]
    heads = [0.0, 73.0, -150.0]
    bench = _bench(tmp_path, world, heads)
    np.testing.assert_allclose(np.degrees(bench.headings()), heads, atol=1e-4)
    aligned = SubmapDataset(bench, np.arange(3), align_yaw=True)
    stored = SubmapDataset(bench, np.arange(3))
    for j in range(3):
        np.testing.assert_allclose(aligned[j].numpy(), world[j], atol=1e-3)
    assert np.abs(stored[1].numpy() - world[1]).max() > 1.0
    turned = SubmapDataset(bench, np.arange(3), yaw_deg=30.0, align_yaw=True)
    np.testing.assert_allclose(turned[2].numpy(), world[2] @ _rot(30.0).T, atol=1e-3)


def test_headings_name_the_missing_pose(tmp_path: Path) -> None:
    bench = _bench(tmp_path, [_cloud(0)], [10.0])
    poses = tmp_path / "w" / "ground_01" / "poses.csv"
    poses.write_text("timestamp,x,y,z,qx,qy,qz,qw\n5.0,0,0,0,0,0,0,1\n")
    with pytest.raises(DatasetError, match=r"poses.csv: no pose for timestamp 1.000000"):
        bench.headings()
    poses.unlink()
    with pytest.raises(DatasetError, match=r"poses\.csv: cannot read"):
        SubmapDataset(bench, np.arange(1), align_yaw=True)


def test_query_views_are_rotated_embeddings(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("hotformerloc-tiny", grad_checkpoint=False).eval()
    world = [_cloud(s) for s in range(3)]
    bench = _bench(tmp_path / "a", world, [0.0, 0.0, 0.0])
    rows = query_rows(bench)
    np.testing.assert_array_equal(rows, [0, 1, 2])
    views = embed_query_views(model, bench, rows, 4)
    assert views.shape == (3, 4, model.config.output_dim)
    np.testing.assert_allclose(views[:, 0], embed_benchmark(model, bench), atol=1e-6)
    turned = _bench(tmp_path / "b", [c @ _rot(270.0).T for c in world], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(views[:, 3], embed_benchmark(model, turned), atol=1e-5)


def test_set_rotation_turns_the_batch_together() -> None:
    cfg = AugmentConfig(set_mode=1, set_rot_theta=180.0)
    clouds = [torch.from_numpy(_cloud(s).astype(np.float64)) for s in range(3)]
    angles = []
    for seed in range(20):
        out = augment_set(clouds, cfg, torch.Generator().manual_seed(seed))
        # one rigid map (rotation, maybe a flip) shared by the batch: solve it on cloud 0
        a, *_ = np.linalg.lstsq(clouds[0].numpy(), out[0].numpy(), rcond=None)
        for c, o in zip(clouds, out, strict=True):
            np.testing.assert_allclose(c.numpy() @ a, o.numpy(), atol=1e-6)
        angles.append(np.degrees(np.arctan2(a[0, 1], a[0, 0])))
    assert max(np.abs(angles)) > 90  # far beyond the old fixed +-5 deg
    with pytest.raises(ValueError, match="set_rot_theta"):
        AugmentConfig(set_rot_theta=200.0)
