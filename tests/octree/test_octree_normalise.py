"""Normalisation, cylindrical mapping, range filter/clamp and degenerate inputs."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from hotformerloc.octree import (
    OctreeInputError,
    bbox_normalise,
    build_octree,
    clamp_to_unit,
    filter_to_unit,
    to_cylindrical,
    unit_sphere_normalise,
)


def test_bbox_normalise_is_isotropic_and_spans_the_longest_axis() -> None:
    rng = np.random.default_rng(0)
    xyz = torch.from_numpy(rng.uniform(0, 1, (500, 3)) * [30.0, 10.0, 4.0] + [100.0, -50.0, 7.0])
    out = bbox_normalise(xyz)
    assert out.dtype == xyz.dtype and out.shape == xyz.shape
    lo, hi = out.amin(0), out.amax(0)
    torch.testing.assert_close(lo[0], torch.tensor(-1.0, dtype=xyz.dtype), atol=1e-6, rtol=0)
    torch.testing.assert_close(hi[0], torch.tensor(1.0, dtype=xyz.dtype), atol=1e-6, rtol=0)
    torch.testing.assert_close(lo + hi, torch.zeros(3, dtype=xyz.dtype), atol=1e-9, rtol=0)
    extent_in = xyz.amax(0) - xyz.amin(0)
    extent_out = hi - lo
    torch.testing.assert_close(extent_out / extent_in, (extent_out / extent_in)[:1].expand(3))
    assert bool((out.abs() < 1).all())


def test_unit_sphere_normalise() -> None:
    xyz = torch.randn(300, 3, generator=torch.Generator().manual_seed(1)) * 5 + 3
    out = unit_sphere_normalise(xyz)
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.norm(dim=1).max(), torch.tensor(1.0))


@pytest.mark.parametrize("fn", [bbox_normalise, unit_sphere_normalise])
def test_normalising_one_repeated_point_gives_the_origin(fn) -> None:
    out = fn(torch.full((4, 3), 2.5))
    assert torch.equal(out, torch.zeros(4, 3))


def test_cylindrical_mapping() -> None:
    angles = torch.tensor([0.0, 0.5, -2.0, 3.0, math.pi / 2])
    r = 0.6
    xyz = torch.stack([r * torch.cos(angles), r * torch.sin(angles), torch.linspace(-1, 1, 5)], 1)
    cyl = to_cylindrical(xyz)
    torch.testing.assert_close(cyl[:, 1], angles / math.pi)
    torch.testing.assert_close(cyl[:, 0], torch.full((5,), 2 * r - 1))
    torch.testing.assert_close(cyl[:, 2], xyz[:, 2])
    axis = to_cylindrical(torch.tensor([[0.0, 0.0, 0.3]]))
    assert axis.tolist() == [[-1.0, 0.0, pytest.approx(0.3)]]
    # The seam: phi = +pi maps to 1 (last azimuth cell), -pi to -1; no wrap-around.
    seam = to_cylindrical(torch.tensor([[-0.5, 0.0, 0.0], [-0.5, -0.0, 0.0]]))
    assert seam[:, 1].tolist() == [1.0, -1.0]
    assert build_octree(seam, 3).coords(3)[:, 1].tolist() == [0, 7]
    # phi' = 1 is a unit-edge coordinate: ocnn wraps it to azimuth cell 0, next to phi' = -1.
    assert build_octree(seam, 3, unit_edge="wrap").coords(3)[:, 1].tolist() == [0]


def test_cylindrical_values_are_in_the_unit_cube_and_rho_filter() -> None:
    xyz = torch.empty(2000, 3).uniform_(-1, 1, generator=torch.Generator().manual_seed(2))
    kept, keep = filter_to_unit(xyz, radial=True)
    rho = torch.sqrt(xyz[:, 0] * xyz[:, 0] + xyz[:, 1] * xyz[:, 1])  # as to_cylindrical
    assert torch.equal(keep, rho <= 1)
    assert torch.equal(kept, xyz[rho <= 1])
    cyl = to_cylindrical(kept)
    assert bool((cyl.abs() <= 1).all())
    # A corner point given anyway is clamped to rho' = 1.
    assert to_cylindrical(torch.tensor([[0.9, 0.9, 0.0]]))[0, 0].item() == 1.0


def test_filter_and_clamp_to_unit() -> None:
    xyz = torch.tensor([[0.5, 0.5, 0.5], [1.0, -1.0, 0.0], [1.0001, 0.0, 0.0], [0.0, -3.0, 0.2]])
    kept, keep = filter_to_unit(xyz)
    assert keep.tolist() == [True, True, False, False]
    assert torch.equal(kept, xyz[:2])
    clamped = clamp_to_unit(xyz)
    expected = torch.tensor(
        [[0.5, 0.5, 0.5], [0.99, -0.99, 0.0], [0.99, 0.0, 0.0], [0.0, -0.99, 0.2]]
    )
    assert torch.equal(clamped, expected)
    assert clamp_to_unit(xyz, margin=1.0)[2, 0].item() == 1.0
    with pytest.raises(OctreeInputError, match="margin"):
        clamp_to_unit(xyz, margin=0.0)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (torch.zeros(0, 3), "empty cloud"),
        (torch.zeros(5, 4), r"shape \(N, 3\), got \(5, 4\)"),
        (torch.zeros(5), r"shape \(N, 3\), got \(5,\)"),
        (torch.zeros(5, 3, dtype=torch.int64), "dtype float32 or float64, got torch.int64"),
        (np.zeros((5, 3), dtype=np.float32), "expected a torch.Tensor, got ndarray"),
        (torch.tensor([[0.0, float("nan"), 0.0], [float("inf"), 0.0, 0.0]]), "2 non-finite"),
    ],
)
@pytest.mark.parametrize(
    "fn", [bbox_normalise, unit_sphere_normalise, to_cylindrical, filter_to_unit, clamp_to_unit]
)
def test_bad_clouds_raise_a_clear_error(fn, value, pattern: str) -> None:
    with pytest.raises(OctreeInputError, match=pattern) as info:
        fn(value)
    assert str(info.value).startswith(f"{fn.__name__} xyz: ")


@pytest.mark.parametrize(
    ("points", "name", "pattern"),
    [
        ([], "build_octree points", "empty batch"),
        (torch.zeros(0, 3), "build_octree points", "empty cloud"),
        ([torch.zeros(4, 3), torch.zeros(0, 3)], r"build_octree points\[1\]", "empty cloud"),
        (
            [torch.zeros(4, 3), torch.zeros(2, 3), torch.tensor([[0.0, float("nan"), 0.0]])],
            r"build_octree points\[2\]",
            "1 non-finite",
        ),
        (
            [torch.zeros(4, 3), torch.tensor([[0.0, 1.5, 0.0], [0.0, 0.0, 0.0]])],
            r"build_octree points\[1\]",
            r"1 points outside \[-1, 1\]\^3 \(max \|coordinate\| 1.5\)",
        ),
        (torch.zeros(3, 2), "build_octree points", "shape"),
        ([torch.zeros(3, 3, dtype=torch.float16)], r"build_octree points\[0\]", "dtype"),
        ("abc", "build_octree points", "got str"),
    ],
)
def test_bad_build_inputs_name_the_sample(points, name: str, pattern: str) -> None:
    with pytest.raises(OctreeInputError, match=pattern) as info:
        build_octree(points, 4)
    assert info.value.name == name.replace("\\", "")
    assert isinstance(info.value, ValueError)


def test_bad_build_parameters() -> None:
    pts = torch.zeros(3, 3)
    for depth in (0, 17, 2.0):
        with pytest.raises(OctreeInputError, match="build_octree depth"):
            build_octree(pts, depth)
    with pytest.raises(OctreeInputError, match="full_depth"):
        build_octree(pts, 4, full_depth=-1)
    with pytest.raises(OctreeInputError, match=r"depths \[5\] outside \[0, 4\]"):
        build_octree(pts, 4, neighbours=[2, 5])
    assert build_octree(pts, 1).full_depth == 1  # default 2 capped at the depth


def test_error_pickles() -> None:
    err = OctreeInputError("build_octree points[3]", "empty cloud (0 points)")
    back = pickle.loads(pickle.dumps(err))
    assert (back.name, back.problem, str(back)) == (err.name, err.problem, str(err))


@pytest.mark.parametrize(
    "pts",
    [
        torch.tensor([[0.3, -0.7, 0.1]]),
        torch.tensor([[0.30, -0.70, 0.10], [0.301, -0.699, 0.1005], [0.302, -0.701, 0.1]]),
    ],
    ids=["one point", "one voxel"],
)
def test_one_point_or_one_voxel_gives_a_chain_of_single_nodes(pts: torch.Tensor) -> None:
    depth = 6
    octree = build_octree(pts, depth)
    for d in range(depth + 1):
        assert octree.counts[d].tolist() == [1]
        expected = torch.full((1, 27), -1)
        expected[0, 13] = 0
        assert torch.equal(octree.neighbours[d], expected)  # only itself
        if d < depth:
            kids = octree.children[d][0]
            assert int((kids >= 0).sum()) == 1 and int(kids.max()) == 0
        if d >= 1:
            assert octree.parent[d].tolist() == [0]
    torch.testing.assert_close(octree.points, pts.mean(0, keepdim=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cylindrical_mapping_follows_numpy_interp_bit_for_bit(dtype: torch.dtype) -> None:
    """rho' = interp(rho, [0, 1], [-1, 1]), phi' = interp(phi, [-pi, pi], [-1, 1]) in float64
    (numpy), cast back; rho = torch.sqrt(x*x + y*y) and phi = torch.atan2(y, x) in ``dtype``."""
    gen = torch.Generator().manual_seed(3)
    xyz = torch.empty(5000, 3, dtype=dtype).uniform_(-1, 1, generator=gen)
    xyz[:4, :2] = torch.tensor([[-0.5, 0.0], [0.0, 0.0], [1.0, 0.0], [0.6, -0.8]], dtype=dtype)
    x, y = xyz[:, 0], xyz[:, 1]
    rho = torch.sqrt(x * x + y * y).numpy()  # includes rho > 1 (interp's right branch)
    phi = torch.atan2(y, x).numpy()
    expected_rho = np.interp(rho, (0, 1), (-1, 1)).astype(rho.dtype).clip(-1, 1)
    expected_phi = np.interp(phi, (-np.pi, np.pi), (-1, 1)).astype(phi.dtype).clip(-1, 1)
    cyl = to_cylindrical(xyz)
    assert cyl.dtype == dtype
    np.testing.assert_array_equal(cyl[:, 0].numpy(), expected_rho)
    np.testing.assert_array_equal(cyl[:, 1].numpy(), expected_phi)
    assert torch.equal(cyl[:, 2], xyz[:, 2])
    # x = -0.5, y = +0: phi = pi (exactly numpy's pi in float64, just above it in float32).
    assert cyl[0, 1].item() == 1.0 and cyl[1].tolist()[:2] == [-1.0, 0.0]
