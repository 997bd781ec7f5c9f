"""Augmentations: identity, deletion, rotation, flips, never empty, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from hotformerloc.config import ConfigError
from hotformerloc.data import AugmentConfig, augment_sample, augment_set

QUIET = dict(jitter_sigma=0.0, remove_max=0.0, translate_sigma=0.0, erase_p=0.0)


def cloud(n: int = 500, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 3), generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mode_0_is_identity() -> None:
    x = cloud()
    cfg = AugmentConfig(mode=0, set_mode=0)
    assert augment_sample(x, cfg, gen(0)) is x
    assert augment_set([x], cfg, gen(0))[0] is x


def test_removal_deletes_points_and_jitter_is_clipped() -> None:
    x = cloud(1000)
    cfg = AugmentConfig(mode=1, translate_sigma=0.0, erase_p=0.0)
    sizes = []
    for seed in range(6):
        y = augment_sample(x, cfg, gen(seed))
        sizes.append(len(y))
        assert 900 < len(y) <= 1000  # floor(1000 * U(0, 0.1)) deleted
        d = torch.cdist(y.double(), x.double(), p=float("inf")).min(1).values
        assert d.max() <= cfg.jitter_clip + 1e-7  # every point is a jittered input point
        assert d.max() > 0
    assert min(sizes) < 1000 and len(set(sizes)) > 1


def test_block_erase_deletes_an_xy_rectangle() -> None:
    x = cloud(2000)
    cfg = AugmentConfig(mode=1, **{**QUIET, "erase_p": 1.0})
    erased = 0
    for seed in range(5):
        y = augment_sample(x, cfg, gen(seed))
        kept = (x[:, None] == y[None]).all(2).any(1)  # y is an exact subset of x
        assert int(kept.sum()) == len(y)
        gone = x[~kept]
        erased += len(gone)
        if len(gone):
            lo, hi = gone[:, :2].amin(0), gone[:, :2].amax(0)
            inside = ((y[:, :2] >= lo) & (y[:, :2] <= hi)).all(1)
            assert not inside.any()  # the deleted points are exactly those in a rectangle
    assert erased > 0


def test_never_empty() -> None:
    cfg = AugmentConfig(mode=2, erase_p=1.0, remove_max=0.99, erase_area=(1.0, 1.0))
    for n in (1, 2, 3, 10):
        for seed in range(10):
            assert len(augment_sample(cloud(n, seed), cfg, gen(seed))) >= 1


def test_rotation_preserves_xy_norms() -> None:
    x = cloud(300).double()
    cfg = AugmentConfig(mode=2, rot_theta=10.0, **QUIET)
    for seed in range(5):
        y = augment_sample(x, cfg, gen(seed))
        assert y.dtype == torch.float64 and y.shape == x.shape
        torch.testing.assert_close(y[:, :2].norm(dim=1), x[:, :2].norm(dim=1))
        torch.testing.assert_close(y[:, 2], x[:, 2])
        angle = torch.atan2(y[:, 1], y[:, 0]) - torch.atan2(x[:, 1], x[:, 0])
        angle = torch.remainder(angle + math.pi, 2 * math.pi) - math.pi  # wrap
        assert angle.std() < 1e-9 and 0 < abs(float(angle[0])) <= math.radians(10.0)


def test_set_flips_shared_by_the_batch() -> None:
    a, b = cloud(50, 1), cloud(60, 2)
    cfg = AugmentConfig(set_mode=2)
    counts = {"x": 0, "y": 0, "none": 0}
    for seed in range(400):
        ya, yb = augment_set([a, b], cfg, gen(seed))
        for kind, sign in (("x", [-1, 1, 1]), ("y", [1, -1, 1]), ("none", [1, 1, 1])):
            s = torch.tensor(sign, dtype=a.dtype)
            if torch.equal(ya, a * s):
                assert torch.equal(yb, b * s)
                counts[kind] += 1
                break
        else:
            pytest.fail("set_mode 2 did something other than a flip")
    assert 60 < counts["x"] < 140 and 60 < counts["y"] < 140 and 150 < counts["none"] < 250


def test_set_mode_1_rotates_at_most_5_degrees() -> None:
    x = torch.tensor([[1.0, 0.0, 0.3]], dtype=torch.float64)
    cfg = AugmentConfig(set_mode=1)
    angles = []
    for seed in range(50):
        (y,) = augment_set([x], cfg, gen(seed))
        torch.testing.assert_close(y[:, :2].norm(dim=1), x[:, :2].norm(dim=1))
        y = y * torch.tensor([1.0 if y[0, 0] > 0 else -1.0, 1.0, 1.0], dtype=y.dtype)  # un-flip x
        angles.append(abs(math.degrees(math.atan2(float(y[0, 1]), float(y[0, 0])))))
    assert max(angles) <= 5.0 and max(angles) > 1.0


def test_determinism_with_the_same_generator() -> None:
    x = cloud(400)
    cfg = AugmentConfig(erase_p=0.5)
    ya = augment_set([augment_sample(x, cfg, gen(7))], cfg, gen(8))[0]
    yb = augment_set([augment_sample(x, cfg, gen(7))], cfg, gen(8))[0]
    assert torch.equal(ya, yb)
    assert not torch.equal(augment_sample(x, cfg, gen(7)), augment_sample(x, cfg, gen(9)))
    state = torch.random.get_rng_state()
    augment_sample(x, cfg, gen(1))
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched


@pytest.mark.parametrize(
    "bad", [dict(mode=3), dict(set_mode=-1), dict(remove_max=1.0), dict(erase_area=(0.5, 0.1))]
)
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ConfigError):
        AugmentConfig(**bad)
