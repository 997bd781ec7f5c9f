"""SubmapDataset, Collate (octree chunks, masks, determinism), loaders in and out of workers."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from hotformerloc.data import (
    AugmentConfig,
    Batch,
    Benchmark,
    Collate,
    PairBatchSampler,
    SubmapDataset,
    Tuples,
    batch_masks,
    build_tuples,
    embedding_loader,
    make_loader,
)
from hotformerloc.io import PointCloud, write_pointcloud
from hotformerloc.model import get_model_config, prepare_points
from hotformerloc.octree import Octree, build_octree

CONFIG = get_model_config("hotformerloc-tiny", input_scale=1 / 30)  # depth 6, bbox-normalised


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Benchmark:
    """2 worlds x (ground_a, aerial) x 6 submaps 5 m apart, 150 random points each."""
    root = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(0)
    for world in ("w1", "w2"):
        lines = ["sequence,timestamp,x,y,source,split\n"]
        for seq, source in (("ground_a", "ground"), ("aerial", "aerial")):
            for k in range(6):
                xyz = rng.uniform([-30, -30, 0], [30, 30, 10], (150, 3)).astype(np.float32)
                path = root / world / seq / "clouds" / f"{k:.6f}.pcd"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_pointcloud(path, PointCloud(xyz, source=source), format="pcd")
                lines.append(
                    f"{seq},{k:.6f},{5 * k + 0.5 * (source == 'aerial')},0,{source},train\n"
                )
        (root / world / "split.csv").write_text("".join(lines))
    return Benchmark.load(root)


@pytest.fixture(scope="module")
def train(bench: Benchmark) -> tuple[SubmapDataset, Tuples]:
    idx = bench.select(split="train")
    return SubmapDataset(bench, idx), build_tuples(bench.xy[idx], bench.world[idx], 6.0, 12.0)


def same_octree(a: Octree, b: Octree) -> bool:
    return (
        a.batch_size == b.batch_size
        and all(torch.equal(x, y) for x, y in zip(a.keys, b.keys, strict=True))
        and all(torch.equal(x, y) for x, y in zip(a.counts, b.counts, strict=True))
        and torch.equal(a.points, b.points)
    )


def same_batch(a: Batch, b: Batch) -> bool:
    return (
        np.array_equal(a.indices, b.indices)
        and a.chunks == b.chunks
        and a.num_points == b.num_points
        and all(same_octree(x, y) for x, y in zip(a.octrees, b.octrees, strict=True))
        and torch.equal(a.positives_mask, b.positives_mask)
        and torch.equal(a.negatives_mask, b.negatives_mask)
    )


def test_dataset_yields_stored_clouds(bench: Benchmark) -> None:
    idx = np.array([3, 20, 7])
    raw, turned = SubmapDataset(bench, idx), SubmapDataset(bench, idx, yaw_deg=90.0)
    assert len(raw) == 3
    x = raw[1]
    assert x.dtype == torch.float32 and x.shape == (150, 3)
    np.testing.assert_array_equal(x.numpy(), bench.load_cloud(20))
    torch.testing.assert_close(turned[1][:, 0], -x[:, 1], atol=1e-5, rtol=0)
    with pytest.raises(IndexError):
        raw[3]
    with pytest.raises(ValueError, match="row indices"):
        SubmapDataset(bench, np.array([24]))


def test_collate_applies_the_model_input_scale(train: tuple[SubmapDataset, Tuples]) -> None:
    """input_scale is applied before everything else: with no normalisation, the leaf
    points of raw metric clouds are the scaled points' leaves."""
    ds, _ = train
    cfg = get_model_config("hotformerloc-tiny", input_scale=1 / 30, normalize_points=False)
    out = Collate(cfg, None, None, split_size=2, seed=0)([(j, ds[j]) for j in (1, 2)])
    scaled = [ds[j] * (1 / 30) for j in (1, 2)]
    assert all(float(c.abs().max()) <= 1.0 for c in scaled)
    ref = build_octree(scaled, cfg.octree_depth, cfg.full_depth)
    assert same_octree(out.octrees[0], ref)


def test_collate_chunks_and_masks(train: tuple[SubmapDataset, Tuples]) -> None:
    ds, tuples = train
    batch = [4, 10, 0, 7, 19, 13, 4]
    collate = Collate(CONFIG, tuples, AugmentConfig(), split_size=3, seed=0)
    out = collate([(j, ds[j]) for j in batch])
    assert out.indices.tolist() == batch
    assert out.chunks == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert [o.batch_size for o in out.octrees] == [3, 3, 1]
    assert all(o.depth == CONFIG.octree_depth and not o.neighbours for o in out.octrees)
    pos, neg = batch_masks(np.array(batch), tuples)
    assert torch.equal(out.positives_mask, pos) and torch.equal(out.negatives_mask, neg)
    assert out.positives_mask[0, 2] == (0 in tuples.positives[4])
    assert out.positives_mask.any() and not out.positives_mask[0, 6]  # same element twice
    leaves = sum(int(o.counts[-1].sum()) for o in out.octrees)
    assert leaves <= out.num_points < 7 * 150  # augmentation deleted some points
    moved = out.to("cpu")
    assert moved.positives_mask.device.type == "cpu" and len(moved.octrees) == 3


@pytest.mark.parametrize("max_z", [None, 5.0])
def test_no_augmentation_matches_prepare_points(
    train: tuple[SubmapDataset, Tuples], max_z: float | None
) -> None:
    ds, _ = train
    cfg = replace(CONFIG, max_z=max_z)
    out = Collate(cfg, None, None, split_size=8, seed=0)([(j, ds[j]) for j in (1, 2)])
    ref = build_octree(
        [prepare_points(ds[j], cfg) for j in (1, 2)], cfg.octree_depth, cfg.full_depth
    )
    assert same_octree(out.octrees[0], ref)
    assert out.positives_mask is None and out.negatives_mask is None
    kept = sum(int((ds[j][:, 2] <= max_z).sum()) for j in (1, 2)) if max_z is not None else 300
    assert out.num_points == kept and (max_z is None or 0 < kept < 300)


def test_augmentation_is_a_function_of_the_batch(train: tuple[SubmapDataset, Tuples]) -> None:
    ds, tuples = train
    items = [(j, ds[j]) for j in (3, 8, 9, 2)]
    a = Collate(CONFIG, tuples, AugmentConfig(), split_size=2, seed=11)
    b = pickle.loads(pickle.dumps(a))
    assert same_batch(a(items), b(items))
    other = Collate(CONFIG, tuples, AugmentConfig(), split_size=2, seed=12)(items)
    assert not same_octree(a(items).octrees[0], other.octrees[0])


def test_worker_and_main_process_give_identical_batches(
    train: tuple[SubmapDataset, Tuples],
) -> None:
    ds, tuples = train
    sampler = PairBatchSampler(tuples, batch_size=8, seed=3)
    sampler.set_epoch(1)
    assert len(sampler) >= 2
    collate = Collate(CONFIG, tuples, AugmentConfig(), split_size=4, seed=3)
    runs = []
    for workers in (0, 1):
        loader = make_loader(ds, sampler, collate, num_workers=workers)
        runs.append([b for _, b in zip(range(2), loader, strict=False)])
    for a, b in zip(*runs, strict=True):
        assert same_batch(a, b)
    assert runs[0][0].indices.tolist() == next(iter(sampler))
    assert not np.array_equal(runs[0][0].indices, runs[0][1].indices)


def test_embedding_loader(train: tuple[SubmapDataset, Tuples]) -> None:
    ds, _ = train
    batches = list(embedding_loader(ds, CONFIG, batch_size=10, num_workers=0))
    assert [b.indices.tolist() for b in batches] == [
        list(range(10)),
        list(range(10, 20)),
        [20, 21, 22, 23],
    ]
    assert all(len(b.octrees) == 1 and b.positives_mask is None for b in batches)
    assert batches[2].octrees[0].batch_size == 4
