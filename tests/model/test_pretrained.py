"""Pretrained weights by name (``ARCH.TAG``, timm's habit): the registry's table,
``create_model(name, pretrained=True)``, ``list_models(pretrained=True)``, ``load_model``
and the CLI (``models``, ``embed --model ARCH.TAG``), on a temporary entry."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import run_cli as cli
from hotformerloc.config import ConfigError, to_dict
from hotformerloc.io import PointCloud, read_pointcloud, write_pointcloud
from hotformerloc.model import registry
from hotformerloc.model.checkpoint import CheckpointError, load_model, save_checkpoint
from hotformerloc.model.registry import (
    create_model,
    get_model_config,
    list_models,
    register_pretrained,
)

SCALE = 1.0 / 30.0


def save_tiny(path: Path, seed: int) -> tuple[torch.nn.Module, str]:
    """A seeded hotformerloc-tiny (input scale 1/30) saved at ``path``: (model, SHA-256)."""
    torch.manual_seed(seed)
    model = create_model("hotformerloc-tiny", input_scale=SCALE)
    sha = save_checkpoint(path, model, "hotformerloc-tiny", to_dict(model.config))
    return model, sha


@pytest.fixture
def weights(tmp_path, monkeypatch) -> tuple[torch.nn.Module, registry.PretrainedEntry]:
    """An empty table and weights folder, then ``hotformerloc-tiny.test``: (model, entry)."""
    monkeypatch.setattr(registry, "_PRETRAINED", {})
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    file = "hotformerloc-tiny.test.safetensors"
    model, sha = save_tiny(tmp_path / "weights" / file, seed=7)
    entry = register_pretrained("hotformerloc-tiny.test", file, sha, "seeded test weights")
    return model, entry


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------ the API
def test_pretrained_loads_exactly_the_saved_weights_and_config(weights):
    ref, _ = weights
    model = create_model("hotformerloc-tiny.test", pretrained=True)
    assert same_weights(model, ref)
    assert model.config == ref.config and model.config.input_scale == SCALE
    assert model.training  # like create_model: the caller picks eval()
    assert get_model_config("hotformerloc-tiny.test") == ref.config


def test_bare_arch_loads_its_default_first_registered_tag(weights, tmp_path):
    ref, _ = weights
    _, sha = save_tiny(tmp_path / "other.safetensors", seed=8)
    register_pretrained("hotformerloc-tiny.other", str(tmp_path / "other.safetensors"), sha, "x")
    assert same_weights(create_model("hotformerloc-tiny", pretrained=True), ref)
    other = create_model("hotformerloc-tiny.other", pretrained=True)
    assert not same_weights(other, ref)
    assert registry.pretrained_tags("hotformerloc-tiny") == [
        "hotformerloc-tiny.test",
        "hotformerloc-tiny.other",
    ]


def test_tag_without_pretrained_is_the_architecture_with_random_weights(weights):
    ref, _ = weights
    model = create_model("hotformerloc-tiny.test", drop_path=0.0)
    assert model.config == get_model_config("hotformerloc-tiny.test", drop_path=0.0)
    assert model.config.input_scale == SCALE
    assert not same_weights(model, ref)


def test_non_architectural_overrides_are_allowed(weights):
    ref, _ = weights
    model = create_model(
        "hotformerloc-tiny.test", pretrained=True, drop_path=0.0, grad_checkpoint=True
    )
    assert model.config.drop_path == 0.0 and model.config.grad_checkpoint
    assert same_weights(model, ref)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"output_dim": 64}, r"output_dim=64 changes the architecture.*shape"),
        ({"num_blocks": (2, 3)}, r"num_blocks=\(2, 3\) changes the architecture.*missing"),
    ],
)
def test_shape_changing_overrides_fail_clearly(weights, overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        create_model("hotformerloc-tiny.test", pretrained=True, **overrides)
    assert "hotformerloc-tiny.test" in str(info.value)


def test_a_flipped_byte_or_another_file_is_a_checkpoint_error(weights):
    _, entry = weights
    path = entry.path
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as info:
        create_model("hotformerloc-tiny.test", pretrained=True)
    assert info.value.path == str(path)
    save_tiny(path, seed=9)  # a valid checkpoint, but not the registered file
    with pytest.raises(CheckpointError, match="SHA-256") as info:
        load_model("hotformerloc-tiny.test")
    assert info.value.path == str(path)
    path.unlink()
    with pytest.raises(CheckpointError, match="not found"):
        create_model("hotformerloc-tiny", pretrained=True)


def test_list_models_pretrained_and_filter(weights):
    names = list_models()
    assert "hotformerloc-tiny" in names and not any("." in n for n in names)
    assert list_models(pretrained=True) == ["hotformerloc-tiny.test"]
    assert list_models(filter="*tiny*") == ["hotformerloc-tiny"]
    assert list_models(pretrained=True, filter="*small*") == []
    assert registry.is_model_name("hotformerloc-tiny.test")
    assert not registry.is_model_name("hotformerloc-tiny.nope")


def test_load_model_returns_the_packaged_checkpoint(weights):
    ref, entry = weights
    model, ck = load_model("hotformerloc-tiny.test")
    assert ck is not None and ck.sha256 == entry.sha256 == sha256_of(entry.path)
    assert ck.model == "hotformerloc-tiny" and ck.config["input_scale"] == SCALE
    assert not model.training and same_weights(model, ref)
    _, none = load_model("hotformerloc-tiny")  # a bare name stays random weights
    assert none is None
    with pytest.raises(CheckpointError, match="no pretrained weights tagged 'nope'"):
        load_model("hotformerloc-tiny.nope")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_no_weights_is_one_clear_config_error(weights):
    with pytest.raises(ConfigError) as info:
        create_model("hotformerloc-small", pretrained=True)
    msg = str(info.value)
    assert "'hotformerloc-small' has no pretrained weights" in msg
    assert "hotformerloc-tiny.test" in msg  # lists list_models(pretrained=True)
    with pytest.raises(ConfigError, match="tagged 'nope'"):
        create_model("hotformerloc-tiny.nope")
    with pytest.raises(ConfigError, match="unknown model 'hotformerloc-huge'"):
        create_model("hotformerloc-huge.test", pretrained=True)


def test_register_pretrained_validates(weights):
    sha = "0" * 64
    with pytest.raises(ValueError, match="unknown model"):
        register_pretrained("hotformerloc-huge.x", "f.safetensors", sha, "")
    for bad in (
        "hotformerloc-tiny",
        "hotformerloc-tiny.",
        "hotformerloc-tiny.A",
        "hotformerloc-tiny.pt",
    ):
        with pytest.raises(ValueError, match=r"ARCH\.TAG"):
            register_pretrained(bad, "f.safetensors", sha, "")
    with pytest.raises(ValueError, match="sha256"):
        register_pretrained("hotformerloc-tiny.x", "f.safetensors", "abc", "")
    with pytest.raises(ValueError, match="already registered"):
        register_pretrained("hotformerloc-tiny.test", "f.safetensors", sha, "")


def test_shipped_weights_match_their_entries():
    """Every entry of the real table: its packaged file is there and its SHA-256 matches."""
    for name in list_models(pretrained=True):
        entry = registry.get_pretrained(name)
        assert entry.path.parent == registry.WEIGHTS_DIR and entry.path.is_file(), name
        assert sha256_of(entry.path) == entry.sha256, name
        assert registry.read_pretrained_config(entry)["input_scale"] is not None, name


# ------------------------------------------------------------------------------ the CLI
def test_cli_models_lists_pretrained_weights(weights):
    _, entry = weights
    code, out, err = cli("models", "--pretrained", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["hotformerloc-tiny.test"]
    row = rows[0]
    assert row["sha256"] == entry.sha256 and row["architecture"] == "hotformerloc-tiny"
    assert row["input_pipeline"]["input_scale"] == SCALE and row["default"]
    assert "1/30" in row["input"]
    code, out, _ = cli("models", "--json")
    tiny = next(r for r in json.loads(out) if r["name"] == "hotformerloc-tiny")
    assert tiny["pretrained"] == ["hotformerloc-tiny.test"]
    code, out, _ = cli("models", "--pretrained")
    assert code == 0 and "hotformerloc-tiny.test" in out


def test_cli_embed_with_a_pretrained_name_matches_the_loaded_model(weights, tmp_path):
    _, entry = weights
    rng = np.random.default_rng(0)
    files = []
    for i in range(2):
        xyz = rng.uniform(-20, 20, (1200, 3)).astype(np.float32)
        xyz[:, 2] *= 0.2
        files.append(tmp_path / f"scan_{i}.pcd")
        write_pointcloud(files[-1], PointCloud(xyz))
    out = tmp_path / "out"
    code, _, err = cli(
        "embed", "--model", "hotformerloc-tiny.test", "--out", str(out), "--device", "cpu",
        *map(str, files),
    )  # fmt: skip
    assert code == 0, err
    assert "untrained" not in err
    desc = np.load(out / "descriptors.npy")
    model, _ = load_model("hotformerloc-tiny.test")
    with torch.inference_mode():
        ref = model.embed([torch.from_numpy(read_pointcloud(f).xyz) for f in files]).numpy()
    np.testing.assert_allclose(desc, ref, atol=1e-5)
    meta = json.loads((out / "embed.json").read_text())
    assert meta["weights_sha256"] == entry.sha256
    assert meta["input_pipeline"]["input_scale"] == SCALE


def test_cli_unknown_tag_is_one_line_exit_2(tmp_path):
    scan = tmp_path / "scan.pcd"
    write_pointcloud(scan, PointCloud(np.zeros((10, 3), np.float32)))
    code, _, err = cli(
        "embed", "--model", "hotformerloc-tiny.nope", "--out", str(tmp_path / "o"), str(scan)
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "hotformerloc-tiny.nope" in lines[0] and "tagged 'nope'" in lines[0]


def test_database_spec_of_a_pretrained_name_reloads_it(weights):
    from hotformerloc.index.pipeline import load_embedder

    embedder = load_embedder("hotformerloc-tiny.test")
    assert embedder.info.spec == "hotformerloc-tiny.test"
