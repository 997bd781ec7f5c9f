"""`hotformerloc embed`: descriptors from files, by registered name or checkpoint."""

import json
import os
import subprocess
import sys

import numpy as np
import torch

from hotformerloc import create_model
from hotformerloc.config import to_dict
from hotformerloc.io import PointCloud, write_pointcloud
from hotformerloc.model.checkpoint import save_checkpoint

ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hotformerloc.cli.main", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def clouds(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        xyz = rng.uniform(-20, 20, (1500, 3)).astype(np.float32)
        xyz[:, 2] *= 0.2
        p = tmp_path / f"scan_{i}.pcd"
        write_pointcloud(p, PointCloud(xyz))
        paths.append(p)
    return paths


def test_embed_with_a_checkpoint_matches_the_in_process_model(tmp_path):
    files = clouds(tmp_path)
    torch.manual_seed(1)
    model = create_model("hotformerloc-tiny").eval()
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, model, "hotformerloc-tiny", to_dict(model.config))
    out = tmp_path / "out"
    r = run(
        "embed",
        "--model",
        str(ckpt),
        "--out",
        str(out),
        "--batch-size",
        "2",
        *map(str, [files[0], files[1], files[2], files[0]]),
    )
    assert r.returncode == 0, r.stderr
    desc = np.load(out / "descriptors.npy")
    assert desc.shape == (4, 256) and desc.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(desc[0], desc[3], atol=1e-5)  # same file, same descriptor
    assert (out / "ids.txt").read_text().splitlines() == [str(f) for f in [*files, files[0]]]
    meta = json.loads((out / "embed.json").read_text())
    assert meta["model"] == "hotformerloc-tiny" and meta["weights_sha256"]
    from hotformerloc.io import read_pointcloud

    with torch.inference_mode():
        ref = model.embed([torch.from_numpy(read_pointcloud(f).xyz) for f in files]).numpy()
    np.testing.assert_allclose(desc[:3], ref, atol=1e-5)


def test_embed_errors_are_clear_and_write_nothing(tmp_path):
    files = clouds(tmp_path)
    bad = tmp_path / "bad.pcd"
    bad.write_bytes(b"VERSION 0.7\nFIELDS x y\n")
    out = tmp_path / "out"
    r = run("embed", "--model", "hotformerloc-tiny", "--out", str(out), str(files[0]), str(bad))
    assert r.returncode == 2 and "bad.pcd" in r.stderr and "Traceback" not in r.stderr
    assert not (out / "descriptors.npy").exists()
    r = run("embed", "--model", "no-such-model", "--out", str(out), str(files[0]))
    assert r.returncode == 2 and "neither a registered model" in r.stderr
    corrupt = tmp_path / "c.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    r = run("embed", "--model", str(corrupt), "--out", str(out), str(files[0]))
    assert r.returncode == 2 and "c.safetensors" in r.stderr
