"""Simulated sensors: noise and dropout statistics, beam geometry, airborne penetration."""

import numpy as np
import pytest

from hotformerloc.config import ConfigError
from hotformerloc.synth.scene import HeightField, Label, PrimitiveBuilder, Scene
from hotformerloc.synth.sensors import (
    AerialLidarConfig,
    GroundLidarConfig,
    aerial_survey,
    flight_rays,
    ground_scan,
)


def plane(z: float = 0.0) -> HeightField:
    return HeightField(-200, -200, 10.0, np.full((41, 41), z))


def test_ground_scan_noise_and_dropout_statistics():
    scene = Scene(terrain=plane(0.0))
    pose = np.eye(4)
    pose[2, 3] = 2.0
    exact = GroundLidarConfig(beams=32, columns=720, range_noise=0.0, dropout=0.0)
    noisy = GroundLidarConfig(beams=32, columns=720, range_noise=0.05, dropout=0.1)
    p0, lab = ground_scan(scene, pose, exact, np.random.default_rng(0))
    p1, _ = ground_scan(scene, pose, noisy, np.random.default_rng(0))
    assert np.all(lab == Label.GROUND)
    np.testing.assert_allclose(p0[:, 2], 0.0, atol=1e-4)
    # dropout removes ~10 % of returns
    assert abs(len(p1) / len(p0) - 0.9) < 0.02
    # range noise: residual along the ray has the configured standard deviation
    r = np.linalg.norm(p1 - pose[:3, 3], axis=1)
    d = (p1 - pose[:3, 3]) / r[:, None]
    true_r = 2.0 / -d[:, 2]
    assert abs(np.std(r - true_r) - 0.05) < 0.005
    # beam geometry: the returns lie on rings at the beam elevations below the horizon
    el = np.rad2deg(np.arcsin(-2.0 / np.linalg.norm(p0 - pose[:3, 3], axis=1)))
    beams = exact.elevations[exact.elevations < 0]
    assert np.isclose(np.rad2deg(beams)[:, None], el[None, :], atol=1e-3).any(0).all()


def test_ground_scan_respects_range_limits():
    scene = Scene(terrain=plane(0.0))
    pose = np.eye(4)
    pose[2, 3] = 1.0
    cfg = GroundLidarConfig(
        beams=16, columns=360, min_range=3.0, max_range=20.0, range_noise=0.0, dropout=0.0
    )
    p, _ = ground_scan(scene, pose, cfg, np.random.default_rng(0))
    r = np.linalg.norm(p - pose[:3, 3], axis=1)
    assert r.min() >= 3.0 and r.max() <= 20.0


def test_flight_lines_cover_the_extent_in_a_lawnmower_pattern():
    cfg = AerialLidarConfig(altitude=60.0, scan_angle=20.0, pulse_density=2.0, overlap=0.3)
    o, d = flight_rays(cfg, (0.0, 0.0, 100.0, 80.0), z_flight=60.0)
    ground = o[:, :2] + d[:, :2] * (60.0 / -d[:, 2])[:, None]
    # every 2 m cell of the extent is hit
    ij = np.floor(ground / 2.0).astype(int)
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < 50) & (ij[:, 1] >= 0) & (ij[:, 1] < 40)
    assert len({tuple(c) for c in ij[inside]}) == 50 * 40
    assert np.all(np.abs(np.rad2deg(np.arccos(-d[:, 2]))) <= 20.0 + 1e-6)
    # alternate lines fly in opposite directions
    line_y = np.round(o[:, 1], 3)
    lines = np.unique(line_y)
    assert len(lines) >= 3
    first = o[line_y == lines[0], 0]
    second = o[line_y == lines[1], 0]
    assert first[0] < first[-1] and second[0] > second[-1]


def test_aerial_survey_penetrates_canopy_with_multiple_returns():
    b = PrimitiveBuilder()
    rng = np.random.default_rng(0)
    for x, y in rng.uniform(5, 55, (25, 2)):
        b.cylinder((x, y, 0), (x, y, 12), 0.3, Label.TRUNK)
        b.ellipsoid((x, y, 14), (4, 4, 4), Label.FOLIAGE, 0.4)
    scene = b.build(terrain=plane(0.0))
    cfg = AerialLidarConfig(altitude=60.0, pulse_density=3.0, max_returns=3, min_separation=1.5)
    pts, lab = aerial_survey(scene, (0.0, 0.0, 60.0, 60.0), cfg, np.random.default_rng(1))
    foliage = pts[lab == Label.FOLIAGE]
    ground = pts[lab == Label.GROUND]
    assert len(foliage) > 1000
    # ground returns under crowns: some pulses go through the canopy
    under = np.zeros(len(ground), bool)
    for e_c in scene.ellipsoids.center:
        under |= np.hypot(*(ground[:, :2] - e_c[:2]).T) < 2.0
    assert under.sum() > 20
    # and those under the crown centres are fewer per area than in the open
    assert under.mean() < 0.5


def test_sensor_configs_reject_impossible_values():
    with pytest.raises(ConfigError, match="preset"):
        GroundLidarConfig(beams=7)
    with pytest.raises(ConfigError, match="vfov"):
        GroundLidarConfig(beams=16, vfov=(10.0, -10.0))
    with pytest.raises(ConfigError, match="dropout"):
        GroundLidarConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="altitude"):
        AerialLidarConfig(altitude=5.0)
    with pytest.raises(ConfigError, match="max_returns"):
        AerialLidarConfig(max_returns=0)
