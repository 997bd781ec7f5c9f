"""Checkpoints: safetensors round trip, corrupt and mismatched files give clear errors."""

import json

import pytest
import torch
from torch import nn

from hotformerloc.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)


def net(width: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, width), nn.LayerNorm(width), nn.Linear(width, 2))


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    model = net()
    path = tmp_path / "m.safetensors"
    digest = save_checkpoint(path, model, "toy", {"width": 4}, {"epoch": 3})
    ck = load_checkpoint(path)
    assert ck.model == "toy" and ck.config == {"width": 4} and ck.extra == {"epoch": 3}
    assert ck.sha256 == digest
    other = net()
    for p in other.parameters():
        nn.init.zeros_(p)
    load_weights(other, ck, path)
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_corrupt_truncated_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, net(), "toy", {})
    raw = path.read_bytes()
    cases = {
        "truncated.safetensors": raw[: len(raw) // 2],
        "tiny.safetensors": raw[:5],
        "header.safetensors": raw[:9] + b"#" + raw[10:],
        "flipped.safetensors": raw[:-3] + bytes([raw[-3] ^ 0x10]) + raw[-2:],
        "foreign.safetensors": raw.replace(b"hotformerloc-checkpoint", b"something-else-checkpo"),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=name):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_mismatched_weights_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, net(4), "toy", {})
    ck = load_checkpoint(path)
    with pytest.raises(CheckpointError, match="shape"):
        load_weights(net(5), ck, path)
    with pytest.raises(CheckpointError, match="missing"):
        load_weights(nn.Sequential(nn.Linear(3, 4)), ck, path)


def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, net(), "toy", {"v": 1})
    import hotformerloc.model.checkpoint as ckmod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ckmod, "st_save", boom)
    with pytest.raises(RuntimeError):
        save_checkpoint(path, net(), "toy", {"v": 2})
    assert load_checkpoint(path).config == {"v": 1}
    assert json.loads(json.dumps(load_checkpoint(path).config)) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
