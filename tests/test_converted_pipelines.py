"""Converted reference weights through the user-facing pipelines: ``hotformerloc convert``
of a reference-layout ``.pth``, then ``hotformerloc embed`` and ``hotformerloc db build``
with the converted checkpoint must give ``model.embed`` of the same clouds prepared by the
checkpoint's own input pipeline (recorded in its config), with no extra flag; a checkpoint
converted with ``--set input_scale=0.05`` applies that scale to metric clouds by itself.
All commands run in-process through the console entrypoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cli_helpers import run_cli as cli
from hotformerloc.index import PlaceDatabase
from hotformerloc.io import PointCloud, read_pointcloud, write_pointcloud
from hotformerloc.model import prepare_points
from hotformerloc.model.checkpoint import load_checkpoint, load_model
from hotformerloc.model.config import INPUT_PIPELINE_FIELDS
from hotformerloc.octree import build_octree

SCALE = 0.05
#: Descriptors from the CLIs vs the in-process model (batching and re-normalisation only).
ATOL = 1e-6


def forest_metres(seed: int) -> np.ndarray:
    """A metric forest-like submap within +-19 m (ground + trunks), float32."""
    rng = np.random.default_rng(seed)
    ground = np.c_[rng.uniform(-19, 19, (1500, 2)), rng.normal(0, 0.05, 1500)]
    trunks = []
    for cx, cy in rng.uniform(-17, 17, (15, 2)):
        a = rng.uniform(0, 2 * np.pi, 80)
        trunks.append(np.c_[cx + 0.3 * np.cos(a), cy + 0.3 * np.sin(a), rng.uniform(0, 8, 80)])
    return np.concatenate([ground, *trunks]).astype(np.float32)


def write_folder(folder: Path, clouds: list[np.ndarray]) -> list[Path]:
    """Clouds as ``<timestamp>.pcd`` plus a ``poses.csv`` listing them (db data layout)."""
    folder.mkdir(parents=True)
    lines = ["timestamp,x,y,z,qx,qy,qz,qw"]
    paths = []
    for k, xyz in enumerate(clouds):
        ts = 100.0 + k
        path = folder / f"{ts:.6f}.pcd"
        write_pointcloud(path, PointCloud(xyz))
        np.testing.assert_array_equal(read_pointcloud(path).xyz, xyz)  # stored exactly
        lines.append(f"{ts:.6f},{10.0 * k},5.0,0.0,0.0,0.0,0.0,1.0")
        paths.append(path)
    (folder / "poses.csv").write_text("\n".join(lines) + "\n")
    return paths


@dataclasses.dataclass
class Setup:
    root: Path
    reference_descriptor: np.ndarray  # stored reference output for small_cloud.npy
    checkpoints: dict[str, Path]  # "plain", "scaled"
    folders: dict[str, list[Path]]  # "unit" (model units), "metric" (metres)


@pytest.fixture(scope="module")
def setup(shared_data: Path, tmp_path_factory, tiny_convert_args) -> Setup:
    TINY = tiny_convert_args
    parity = shared_data / "reference_parity"
    if not (parity / "small_weights.safetensors").is_file():
        pytest.skip(f"{parity} has no small fixture")
    root = tmp_path_factory.mktemp("converted_pipelines")
    pth = root / "hotformerloc_small.pth"
    torch.save(load_file(parity / "small_weights.safetensors"), pth)  # reference layout
    checkpoints = {"plain": root / "plain.safetensors", "scaled": root / "scaled.safetensors"}
    extra = {"plain": [], "scaled": ["--set", f"input_scale={SCALE}"]}
    for name, out in checkpoints.items():
        code, stdout, err = cli("convert", pth, *TINY, *extra[name], "--out", out)
        assert code == 0, err
        assert "hotformerloc-tiny" in stdout and out.is_file()

    small = np.load(parity / "small_cloud.npy")
    rng = np.random.default_rng(7)

    def subset(n: int) -> np.ndarray:
        return small[np.sort(rng.choice(len(small), n, replace=False))]

    unit = [small, subset(4000), subset(2500), (small * 1.5).astype(np.float32)]
    metric = [
        (small * 20).astype(np.float32),
        forest_metres(3),
        (subset(3000) * 18).astype(np.float32),
    ]
    folders = {
        "unit": write_folder(root / "unit", unit),
        "metric": write_folder(root / "metric", metric),
    }
    reference = np.load(parity / "small_outputs.npz")["descriptor"]
    return Setup(root, reference, checkpoints, folders)


def pipeline_of(checkpoint: Path) -> dict:
    """The input-pipeline fields of the checkpoint's config."""
    config = load_checkpoint(checkpoint).config
    return {k: config[k] for k in INPUT_PIPELINE_FIELDS}


def expected_descriptors(checkpoint: Path, files: list[Path], pipeline: dict) -> np.ndarray:
    """Each cloud alone: prepared by ``pipeline`` (the recorded input-pipeline fields), its
    octree built as the pipeline says, then the checkpoint's network; also checked equal to
    ``model.embed`` of the raw cloud."""
    model, _ = load_model(checkpoint)
    config = dataclasses.replace(model.config, **pipeline)
    out = []
    with torch.inference_mode():
        for f in files:
            xyz = torch.from_numpy(read_pointcloud(f).xyz)
            points = prepare_points(xyz, config, str(f))
            octree = build_octree(
                [points], config.octree_depth, config.full_depth, unit_edge=config.unit_edge
            )
            desc = model(octree)
            np.testing.assert_array_equal(desc.numpy(), model.embed([xyz]).numpy())
            out.append(desc[0].numpy())
    return np.stack(out)


CASES = [("plain", "unit"), ("scaled", "metric")]


@pytest.mark.parametrize(("ckpt", "folder"), CASES)
def test_embed_cli_uses_the_checkpoint_pipeline(setup, ckpt, folder):
    checkpoint, files = setup.checkpoints[ckpt], setup.folders[folder]
    out = setup.root / f"embed_{ckpt}"
    code, _, err = cli("embed", "--model", checkpoint, *files, "--out", out)
    assert code == 0, err
    meta = json.loads((out / "embed.json").read_text())
    ck = load_checkpoint(checkpoint)
    assert meta["model"] == "hotformerloc-tiny" and meta["weights_sha256"] == ck.sha256
    recorded = meta["input_pipeline"]
    assert recorded == pipeline_of(checkpoint)
    assert recorded["input_scale"] == (SCALE if ckpt == "scaled" else None)
    assert recorded["unit_edge"] == "wrap" and recorded["range_filter"] == "drop"
    assert recorded["normalize_points"] is False and recorded["octree_depth"] == 7
    assert (out / "ids.txt").read_text().splitlines() == [str(f) for f in files]

    got = np.load(out / "descriptors.npy")
    want = expected_descriptors(checkpoint, files, recorded)
    assert got.shape == want.shape == (len(files), 256) and got.dtype == np.float32
    assert np.abs(got - want).max() <= ATOL
    if ckpt == "plain":  # small_cloud.npy itself: the reference's own descriptor
        assert np.abs(got[0] - setup.reference_descriptor[0]).max() <= 1e-5


@pytest.mark.parametrize(("ckpt", "folder"), CASES)
def test_db_build_stores_the_checkpoint_pipeline_descriptors(setup, ckpt, folder):
    checkpoint, files = setup.checkpoints[ckpt], setup.folders[folder]
    db_path = setup.root / f"db_{ckpt}"
    args = ["--model", checkpoint, "--data", files[0].parent, "--out", db_path, "--batch-size", "2"]
    code, _, err = cli("db", "build", *args)
    assert code == 0, err
    db = PlaceDatabase.open(db_path)
    assert len(db) == len(files) and db.dim == 256
    assert db.model.name == "hotformerloc-tiny"
    assert db.model.data_scale == (SCALE if ckpt == "scaled" else None)
    rows = [db.row(f"{folder}/{folder}/{f.name}") for f in files]
    assert [Path(str(db.entry(r).path)) for r in rows] == [f.resolve() for f in files]
    got = np.asarray(db.descriptors)[rows]
    want = expected_descriptors(checkpoint, files, pipeline_of(checkpoint))
    assert np.abs(got - want).max() <= ATOL
    if ckpt == "plain":
        assert np.abs(got[0] - setup.reference_descriptor[0]).max() <= 1e-5


def test_scaled_checkpoint_equals_plain_weights_on_prescaled_clouds(setup):
    """The scale recorded in the converted config is what embed / db build apply: the
    scaled checkpoint on metric clouds == the same weights on clouds scaled by hand."""
    files = setup.folders["metric"]
    plain, _ = load_model(setup.checkpoints["plain"])
    with torch.inference_mode():
        by_hand = plain.embed([torch.from_numpy(read_pointcloud(f).xyz) * SCALE for f in files])
    scaled = expected_descriptors(
        setup.checkpoints["scaled"], files, pipeline_of(setup.checkpoints["scaled"])
    )
    assert np.abs(scaled - by_hand.numpy()).max() <= ATOL
    # the metric clouds really are outside the model's unit cube without the scale
    assert all(np.abs(read_pointcloud(f).xyz).max() > 10 for f in files)
