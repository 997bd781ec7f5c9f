"""Test-time yaw views: the averaged descriptor equals the reference average over rotated
inputs, and 4 views make it invariant to quarter turns of the input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hotformerloc import create_model
from hotformerloc.data import Benchmark
from hotformerloc.eval.benchmark import embed_benchmark
from hotformerloc.io import PointCloud, write_pointcloud


def _cloud(seed: int, n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-20, 20, (5, 2))
    which = rng.integers(0, 5, n)
    pts = np.concatenate([centres[which], np.zeros((n, 1))], 1) + rng.uniform(0, 4, (n, 3))
    return pts.astype(np.float32)


def _bench(root: Path, clouds: list[np.ndarray]) -> Benchmark:
    lines = ["sequence,timestamp,x,y,source,split\n"]
    (root / "w" / "ground_01" / "clouds").mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(clouds):
        ts = 1.0 + i
        lines.append(f"ground_01,{ts:.6f},{10.0 * i},0,ground,test\n")
        write_pointcloud(root / "w" / "ground_01" / "clouds" / f"{ts:.6f}.pcd", PointCloud(c))
    (root / "w" / "split.csv").write_text("".join(lines))
    return Benchmark.load(root)


def _rot(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("hotformerloc-tiny", grad_checkpoint=False).eval()


def test_yaw_views_equal_reference_average(model: torch.nn.Module, tmp_path: Path) -> None:
    clouds = [_cloud(s) for s in range(3)]
    views = 3
    got = embed_benchmark(model, _bench(tmp_path / "a", clouds), yaw_views=views)
    ref = np.zeros_like(got)
    for v in range(views):
        rotated = [c @ _rot(360.0 * v / views).T for c in clouds]
        ref += embed_benchmark(model, _bench(tmp_path / f"r{v}", rotated))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    single = embed_benchmark(model, _bench(tmp_path / "a", clouds))
    assert np.abs(single - got).max() > 1e-3  # the views do change the descriptor


def test_four_views_are_invariant_to_quarter_turns(model: torch.nn.Module, tmp_path: Path) -> None:
    clouds = [_cloud(s) for s in range(3)]
    turned = [(c @ _rot(90.0).T) for c in clouds]
    a = embed_benchmark(model, _bench(tmp_path / "a", clouds), yaw_views=4)
    b = embed_benchmark(model, _bench(tmp_path / "b", turned), yaw_views=4)
    np.testing.assert_allclose(a, b, atol=1e-4)
    plain_a = embed_benchmark(model, _bench(tmp_path / "a", clouds))
    plain_b = embed_benchmark(model, _bench(tmp_path / "b", turned))
    assert np.abs(plain_a - plain_b).max() > 1e-3  # without views the model is not invariant


def test_bad_yaw_views(model: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="yaw_views"):
        embed_benchmark(model, _bench(tmp_path, [_cloud(0)]), yaw_views=0)
