"""Training augmentations (spec 3.3), per sample and per batch ("set").

Units are those of the normalised cloud ([-1, 1]). Every random number is drawn from the
``torch.Generator`` passed in (CPU), in a fixed order, so a result is a deterministic
function of (input, config, generator state); the global RNGs are never used.

Deviation from the reference: removed and erased points are *deleted*, not moved to the
origin (which creates a spurious occupied voxel there). Point removal deletes fewer than
10 % of the points, and a block erase that would delete every point is skipped, so a cloud
never becomes empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from hotformerloc.config import require

#: ``set_mode`` 1 and 2 flip: negate x with this probability, else negate y with it.
FLIP_P = 0.25


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings (defaults: CS-Wild-Places, spec 3.4).

    mode (per sample): 0 none; 1 jitter -> remove points -> translate -> block erase;
        2 = 1 with a rotation about z of U(-rot_theta, rot_theta) degrees after the removal.
    set_mode (per batch, one draw shared by the batch): 0 none; 1 rotation about z of
        U(-set_rot_theta, set_rot_theta) degrees (the reference's Oxford default: 5) then
        flip; 2 flip only. With clouds aligned to one orientation (``data.align_yaw``),
        ``set_mode`` 1 with ``set_rot_theta`` 180 turns the whole batch to a random common
        orientation and a small ``rot_theta`` leaves each sample's yaw a little off it.
        Flip: with p 0.25 negate x, with p 0.25 negate y, else nothing.
    jitter_sigma, jitter_clip: per-coordinate N(0, sigma) noise clipped to +-clip.
    remove_max: delete floor(N * U(0, remove_max)) random points.
    translate_sigma: one N(0, sigma) offset per axis for the whole cloud.
    erase_p, erase_area, erase_aspect: with probability erase_p delete the points in an
        xy rectangle (all z) of area U(erase_area) times the xy bounding-box area and
        aspect (height / width) U(erase_aspect), placed uniformly so that it starts inside
        the box.
    """

    mode: Literal[0, 1, 2] = 2
    set_mode: Literal[0, 1, 2] = 2
    rot_theta: float = 180.0
    set_rot_theta: float = 5.0
    jitter_sigma: float = 0.001
    jitter_clip: float = 0.002
    remove_max: float = 0.1
    translate_sigma: float = 0.01
    erase_p: float = 0.4
    erase_area: tuple[float, float] = (0.02, 0.33)
    erase_aspect: tuple[float, float] = (0.3, 3.3)

    def __post_init__(self) -> None:
        require(self.mode in (0, 1, 2), f"mode must be 0, 1 or 2, got {self.mode!r}")
        require(self.set_mode in (0, 1, 2), f"set_mode must be 0, 1 or 2, got {self.set_mode!r}")
        require(0 <= self.rot_theta <= 180, f"rot_theta must be in [0, 180], got {self.rot_theta}")
        require(
            0 <= self.set_rot_theta <= 180,
            f"set_rot_theta must be in [0, 180], got {self.set_rot_theta}",
        )
        require(self.jitter_sigma >= 0, f"jitter_sigma must be >= 0, got {self.jitter_sigma}")
        require(self.jitter_clip >= 0, f"jitter_clip must be >= 0, got {self.jitter_clip}")
        require(0 <= self.remove_max < 1, f"remove_max must be in [0, 1), got {self.remove_max}")
        require(
            self.translate_sigma >= 0, f"translate_sigma must be >= 0, got {self.translate_sigma}"
        )
        require(0 <= self.erase_p <= 1, f"erase_p must be in [0, 1], got {self.erase_p}")
        for key in ("erase_area", "erase_aspect"):
            lo, hi = getattr(self, key)
            require(0 < lo <= hi, f"{key} must be (lo, hi) with 0 < lo <= hi, got {(lo, hi)}")


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _rotate_z(points: Tensor, degrees: float) -> Tensor:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    rot = points.new_tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return points @ rot.T


def _erase_block(points: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    lo = points[:, :2].amin(0).tolist()
    hi = points[:, :2].amax(0).tolist()
    span_x, span_y = hi[0] - lo[0], hi[1] - lo[1]
    area = _uniform(generator, *cfg.erase_area) * span_x * span_y
    aspect = _uniform(generator, *cfg.erase_aspect)
    h, w = math.sqrt(area * aspect), math.sqrt(area / aspect)
    x0 = lo[0] + _uniform(generator, 0.0, 1.0) * (span_x - w)
    y0 = lo[1] + _uniform(generator, 0.0, 1.0) * (span_y - h)
    x, y = points[:, 0], points[:, 1]
    inside = (x >= x0) & (x <= x0 + w) & (y >= y0) & (y <= y0 + h)
    return points if bool(inside.all()) else points[~inside]


def augment_sample(points: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Per-sample augmentation of one normalised cloud (spec 3.3, with deletion).

    Args:
        points: (N, 3) float32/float64, N >= 1, normalised units.
        cfg: the settings (``cfg.mode`` selects the pipeline; 0 returns ``points`` itself).
        generator: a CPU generator, the only source of randomness.

    Returns:
        (M, 3), same dtype and device, 1 <= M <= N.
    """
    if cfg.mode == 0:
        return points
    n = points.shape[0]
    noise = torch.randn((n, 3), generator=generator, dtype=points.dtype) * cfg.jitter_sigma
    points = points + noise.clamp(-cfg.jitter_clip, cfg.jitter_clip).to(points.device)
    drop = math.floor(n * _uniform(generator, 0.0, cfg.remove_max))
    order = torch.randperm(n, generator=generator)
    if drop:
        keep = torch.sort(order[drop:]).values.to(points.device)
        points = points[keep]
    if cfg.mode == 2:
        points = _rotate_z(points, _uniform(generator, -cfg.rot_theta, cfg.rot_theta))
    shift = torch.randn(3, generator=generator, dtype=points.dtype) * cfg.translate_sigma
    points = points + shift.to(points.device)
    if _uniform(generator, 0.0, 1.0) < cfg.erase_p:
        points = _erase_block(points, cfg, generator)
    return points


def augment_set(
    clouds: list[Tensor], cfg: AugmentConfig, generator: torch.Generator
) -> list[Tensor]:
    """Per-batch augmentation: one draw applied to every cloud (spec 3.3).

    Args:
        clouds: (N_b, 3) float tensors.
        cfg: ``cfg.set_mode`` selects it (0 returns ``clouds`` unchanged).
        generator: a CPU generator, the only source of randomness.

    Returns:
        The transformed clouds (same shapes, dtypes, devices).
    """
    if cfg.set_mode == 0:
        return clouds
    if cfg.set_mode == 1:
        angle = _uniform(generator, -cfg.set_rot_theta, cfg.set_rot_theta)
        clouds = [_rotate_z(c, angle) for c in clouds]
    u = _uniform(generator, 0.0, 1.0)
    axis = 0 if u < FLIP_P else 1 if u < 2 * FLIP_P else None
    if axis is None:
        return clouds
    sign = torch.ones(3, dtype=torch.float64)
    sign[axis] = -1.0
    return [c * sign.to(c) for c in clouds]
