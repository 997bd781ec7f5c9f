"""Simulated lidars: a ground spinning lidar and an airborne (lawnmower) survey lidar.

Both cast real rays (:mod:`hotformerloc.synth.raycast`) and add sensor nuisances: range
noise (Gaussian, metres), random dropout of returns, minimum and maximum range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hotformerloc.config import require
from hotformerloc.synth.raycast import cast_rays, cast_scan, scan_directions
from hotformerloc.synth.scene import Scene

# vertical fields of view (degrees) of common spinning lidars, by beam count
BEAM_PRESETS: dict[int, tuple[float, float]] = {
    16: (-15.0, 15.0),  # Velodyne VLP-16
    32: (-30.67, 10.67),  # Velodyne HDL-32E
    64: (-24.9, 2.0),  # Velodyne HDL-64E
    128: (-22.5, 22.5),  # Ouster OS1-128
}


@dataclass(frozen=True)
class GroundLidarConfig:
    """Spinning lidar. ``vfov`` (degrees, min/max) defaults to the preset of ``beams``."""

    beams: int = 16
    vfov: tuple[float, float] | None = None
    columns: int = 900  # azimuth samples per revolution (0.4 degree)
    min_range: float = 1.0
    max_range: float = 100.0
    range_noise: float = 0.02  # standard deviation, metres
    dropout: float = 0.05  # probability that a return is lost

    def __post_init__(self) -> None:
        require(self.beams >= 1, f"beams must be >= 1, got {self.beams}")
        require(
            self.vfov is not None or self.beams in BEAM_PRESETS,
            f"beams={self.beams} has no preset field of view; set vfov",
        )
        lo, hi = self.field_of_view
        require(-90 < lo < hi < 90, f"vfov must satisfy -90 < min < max < 90, got {self.vfov}")
        require(self.columns >= 8, f"columns must be >= 8, got {self.columns}")
        require(0 <= self.min_range < self.max_range, "need 0 <= min_range < max_range")
        require(self.range_noise >= 0, "range_noise must be >= 0")
        require(0 <= self.dropout < 1, "dropout must be in [0, 1)")

    @property
    def field_of_view(self) -> tuple[float, float]:
        return self.vfov if self.vfov is not None else BEAM_PRESETS[self.beams]

    @property
    def elevations(self) -> np.ndarray:
        """(beams,) float64 radians, increasing, evenly spaced over the field of view."""
        lo, hi = self.field_of_view
        return np.deg2rad(np.linspace(lo, hi, self.beams))


def _apply_noise(
    rng: np.random.Generator,
    rng_m: np.ndarray,
    noise: float,
    dropout: float,
    min_range: float,
    max_range: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy ranges and the keep mask (dropout and range limits)."""
    noisy = rng_m + rng.normal(0.0, noise, len(rng_m)) if noise > 0 else rng_m.astype(np.float64)
    keep = (rng.random(len(rng_m)) >= dropout) & (noisy >= min_range) & (noisy <= max_range)
    return noisy, keep


def ground_scan(
    scene: Scene,
    pose: np.ndarray,
    cfg: GroundLidarConfig,
    rng: np.random.Generator,
    max_range: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One revolution from sensor ``pose`` (4, 4, sensor -> world).

    Returns world points (M, 3) float32 and their labels (M,) int16. ``max_range`` may
    lower the sensor's range (e.g. to the submap crop radius, for speed).
    """
    rmax = cfg.max_range if max_range is None else min(cfg.max_range, max_range)
    rot = pose[:3, :3]
    origin = pose[:3, 3]
    ret = cast_scan(scene, origin, rot, cfg.elevations, cfg.columns, rmax, rng)
    dirs = scan_directions(cfg.elevations, cfg.columns, rot)
    rng_m, keep = _apply_noise(
        rng, ret.range.astype(np.float64), cfg.range_noise, cfg.dropout, cfg.min_range, rmax
    )
    pts = origin + dirs[ret.ray[keep]] * rng_m[keep, None]
    return pts.astype(np.float32), ret.label[keep]


@dataclass(frozen=True)
class AerialLidarConfig:
    """Airborne survey: lawnmower flight lines over the world at a fixed altitude.

    ``altitude`` is metres above the highest terrain point (50-100 m above ground/canopy
    for a drone survey); the scanner sweeps across track within +-``scan_angle`` degrees.
    ``pulse_density`` is pulses per m^2 in a single swath; lines overlap by ``overlap``.
    Each pulse records up to ``max_returns`` returns ``min_separation`` metres apart.
    """

    altitude: float = 70.0
    scan_angle: float = 20.0
    pulse_density: float = 4.0
    overlap: float = 0.3
    heading: float = 0.0  # flight line direction, degrees from the x axis
    max_returns: int = 3
    min_separation: float = 1.5
    range_noise: float = 0.03
    dropout: float = 0.02

    def __post_init__(self) -> None:
        require(10 <= self.altitude <= 500, f"altitude must be in [10, 500] m, got {self.altitude}")
        require(0 < self.scan_angle < 60, "scan_angle must be in (0, 60) degrees")
        require(self.pulse_density > 0, "pulse_density must be > 0")
        require(0 <= self.overlap < 0.9, "overlap must be in [0, 0.9)")
        require(self.max_returns >= 1, "max_returns must be >= 1")
        require(self.min_separation >= 0, "min_separation must be >= 0")
        require(self.range_noise >= 0, "range_noise must be >= 0")
        require(0 <= self.dropout < 1, "dropout must be in [0, 1)")


def flight_rays(
    cfg: AerialLidarConfig, extent: tuple[float, float, float, float], z_flight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pulse origins and unit directions (P, 3) of a lawnmower survey over ``extent``.

    Lines run along ``heading``, alternate direction (lawnmower) and are spaced so that
    swaths overlap by ``overlap``; the survey covers the extent plus half a swath.
    """
    xmin, ymin, xmax, ymax = extent
    h = z_flight
    half_swath = cfg.altitude * np.tan(np.deg2rad(cfg.scan_angle))
    spacing = np.sqrt(1.0 / cfg.pulse_density)
    hd = np.deg2rad(cfg.heading)
    along = np.array([np.cos(hd), np.sin(hd)])
    across = np.array([-along[1], along[0]])
    corners = np.array([[xmin, ymin], [xmax, ymin], [xmin, ymax], [xmax, ymax]])
    ca = corners @ along
    cc = corners @ across
    line_gap = 2 * half_swath * (1 - cfg.overlap)
    lines = np.arange(cc.min() - half_swath / 2, cc.max() + half_swath / 2 + line_gap, line_gap)
    s_along = np.arange(ca.min() - half_swath, ca.max() + half_swath + spacing, spacing)
    n_across = max(int(np.ceil(2 * half_swath / spacing)), 1)
    ang = np.deg2rad(np.linspace(-cfg.scan_angle, cfg.scan_angle, n_across))
    origins, dirs = [], []
    for i, c in enumerate(lines):
        s = s_along if i % 2 == 0 else s_along[::-1]
        sa, an = np.meshgrid(s, ang, indexing="ij")
        xy = sa.ravel()[:, None] * along + c * across
        o = np.column_stack([xy, np.full(len(xy), h)])
        a = an.ravel()
        d = np.column_stack([np.sin(a)[:, None] * across, -np.cos(a)])
        origins.append(o)
        dirs.append(d)
    return np.concatenate(origins), np.concatenate(dirs)


def aerial_survey(
    scene: Scene,
    extent: tuple[float, float, float, float],
    cfg: AerialLidarConfig,
    rng: np.random.Generator,
    chunk: int = 200_000,
    progress: object | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate the survey; returns world points (M, 3) float32 and labels (M,) int16.

    ``progress``, when given, is called with the fraction done after each chunk.
    """
    ground_top = float(scene.terrain.heights.max()) if scene.terrain is not None else 0.0
    z_flight = ground_top + cfg.altitude
    origins, dirs = flight_rays(cfg, extent, z_flight)
    max_range = cfg.altitude / np.cos(np.deg2rad(cfg.scan_angle)) * 1.5 + 50.0
    pts, labels = [], []
    for start in range(0, len(dirs), chunk):
        o = origins[start : start + chunk]
        d = dirs[start : start + chunk]
        ret = cast_rays(scene, o, d, max_range, rng, cfg.max_returns, cfg.min_separation)
        r, keep = _apply_noise(
            rng, ret.range.astype(np.float64), cfg.range_noise, cfg.dropout, 0.0, max_range
        )
        pts.append((o[ret.ray[keep]] + d[ret.ray[keep]] * r[keep, None]).astype(np.float32))
        labels.append(ret.label[keep])
        if callable(progress):
            progress(min(1.0, (start + chunk) / len(dirs)))
    return np.concatenate(pts), np.concatenate(labels)
