"""The input pipeline lives in the model config: scale, normalisation, range filter,
checkpoint round trip and the migration of checkpoints written before it did."""

from __future__ import annotations

import json

import pytest
import torch
from model_helpers import scene, tiny

from hotformerloc.config import ConfigError, to_dict
from hotformerloc.model import get_model_config, prepare_points
from hotformerloc.model.checkpoint import load_checkpoint, load_model, save_checkpoint
from hotformerloc.octree import OctreeInputError


def test_input_scale_is_applied_first() -> None:
    cloud = scene(500) * 3.0  # metric, up to ~60 m
    cfg = get_model_config("hotformerloc-tiny", input_scale=0.01, normalize_points=False)
    got = prepare_points(cloud, cfg)
    torch.testing.assert_close(got, cloud * 0.01, rtol=0, atol=0)
    # without the scale the points outside the unit cube are dropped
    cloud[0] = torch.tensor([0.5, 0.5, 0.5])
    raw = prepare_points(cloud, get_model_config("hotformerloc-tiny", normalize_points=False))
    assert 1 <= raw.shape[0] < cloud.shape[0] // 2


def test_max_z_drops_the_points_above_it_before_scaling() -> None:
    cloud = scene(600) * 20.0  # metric, z in about [-20, 20]
    cfg = get_model_config("hotformerloc-tiny", input_scale=1 / 30, max_z=5.0)
    keep = cloud[:, 2] <= 5.0
    assert 0 < int(keep.sum()) < cloud.shape[0]
    plain = get_model_config("hotformerloc-tiny", input_scale=1 / 30)
    # metres as given: the same points as cropping by hand, then the rest of the pipeline
    torch.testing.assert_close(
        prepare_points(cloud, cfg), prepare_points(cloud[keep], plain), rtol=0, atol=0
    )
    with pytest.raises(OctreeInputError, match=r"above.*no point at or below max_z -30"):
        prepare_points(cloud, get_model_config("hotformerloc-tiny", max_z=-30.0), "above")
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="max_z must be finite"):
            get_model_config("hotformerloc-tiny", max_z=bad)


def test_range_filter_drop_or_clamp() -> None:
    cloud = torch.tensor([[0.5, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, -2.0, 0.5]])
    drop = get_model_config("hotformerloc-tiny", normalize_points=False)
    clamp = get_model_config("hotformerloc-tiny", normalize_points=False, range_filter="clamp")
    assert prepare_points(cloud, drop).tolist() == [[0.5, 0.0, 0.0]]
    assert prepare_points(cloud, clamp).tolist() == [[0.5, 0, 0], [1.0, 0, 0], [0, -1.0, 0.5]]


def test_full_depth_above_the_coarsest_level_is_rejected() -> None:
    assert get_model_config("hotformerloc-tiny").full_depth == 1  # coarsest level: depth 1
    with pytest.raises(ConfigError, match="full_depth=2 must be <= the coarsest"):
        get_model_config("hotformerloc-tiny", full_depth=2)
    with pytest.raises(ConfigError, match="input_scale"):
        get_model_config("hotformerloc-tiny", input_scale=0.0)


def test_checkpoint_keeps_the_pipeline_and_embeds_like_the_model(tmp_path) -> None:
    model = tiny(input_scale=1 / 30).eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, "hotformerloc-tiny", to_dict(model.config))
    loaded, ck = load_model(path)
    assert ck is not None and loaded.config == model.config
    assert loaded.config.input_pipeline()["input_scale"] == 1 / 30
    clouds = [scene(800, seed=s) for s in (1, 2)]
    with torch.inference_mode():
        torch.testing.assert_close(loaded.embed(clouds), model.embed(clouds), rtol=0, atol=0)


def test_legacy_checkpoint_is_migrated(tmp_path) -> None:
    """A checkpoint from before the pipeline moved into the config: its scale came from
    ``extra["data_scale"]`` and tiny's full_depth was 2 (only ever metadata)."""
    model = tiny().eval()
    old = to_dict(model.config)
    for key in ("input_scale", "range_filter", "unit_edge", "window_batching"):
        del old[key]
    old["full_depth"] = 2
    path = tmp_path / "old.safetensors"
    save_checkpoint(path, model, "hotformerloc-tiny", old, extra={"data_scale": 0.05})
    ck = load_checkpoint(path)
    assert ck.config["input_scale"] == 0.05 and ck.config["full_depth"] == 1
    loaded, _ = load_model(path)
    assert loaded.config.input_scale == 0.05
    cloud = [scene(600)]
    with torch.inference_mode():  # bbox-normalised: the same function up to rounding
        torch.testing.assert_close(loaded.embed(cloud), model.embed(cloud), rtol=0, atol=1e-6)
    # no data_scale at all: the 1/30 that evaluation used for such checkpoints
    save_checkpoint(path, model, "hotformerloc-tiny", old)
    assert json.loads(json.dumps(load_checkpoint(path).config))["input_scale"] == 1 / 30
