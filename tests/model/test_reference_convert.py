"""Reference (official implementation) weights -> our checkpoints: key mapping, strict
shape checks, variant detection, safe reading, descriptor parity with the stored outputs."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hotformerloc.model.checkpoint import CheckpointError, load_model
from hotformerloc.model.reference import (
    PAPER_VARIANTS,
    REFERENCE_COMMIT,
    convert_reference,
    detect_variant,
    expected_shapes,
    fit_problem,
    read_reference_file,
    reference_to_ours,
    save_converted,
)
from hotformerloc.model.registry import create_model

PAPER = {v.removeprefix("hotformerloc-"): v for v in PAPER_VARIANTS}
SMALL = {"octree_depth": 7, "normalize_points": False}
SMALLCYL = {
    "octree_depth": 7,
    "adape_mode": "none",
    "coordinates": "cylindrical",
    "normalize_points": True,
}


def paper_keys(parity: Path, name: str) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (k, tuple(s))
        for k, s in json.loads((parity / f"paper_{name}_state_dict_keys.json").read_text())
    ]


def meta_state(keys: list[tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in keys}


def random_state(keys: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in keys}


# ------------------------------------------------------------------ key mapping, fixtures
@pytest.mark.parametrize(("fixture", "overrides"), [("small", SMALL), ("smallcyl", SMALLCYL)])
def test_mapped_fixture_weights_load_strictly(parity, fixture, overrides):
    ref = load_file(parity / f"{fixture}_weights.safetensors")
    ours = reference_to_ours(ref)
    assert len(ours) == len(ref)
    model = create_model("hotformerloc-tiny", **overrides)
    model.load_state_dict(ours, strict=True)
    dw = ref["backbone.backbone.octf_stage.0.blocks.1.cpe.conv.weights"]
    assert torch.equal(model.octf_blocks[1].cpe.conv.weight, dw[:, 0, :])


def test_unknown_reference_key_is_named():
    key = "backbone.backbone.octf_stage.1.blocks.0.norm1.weight"
    with pytest.raises(ValueError, match=re.escape(key)):
        reference_to_ours({key: torch.ones(2)})


# ------------------------------------------------------------------ paper variants
def test_paper_key_lists_are_mutually_distinguishable(parity):
    """Each released config fits its own variant and no other (keys + shapes)."""
    for name, variant in PAPER.items():
        ref = meta_state(paper_keys(parity, name))
        for other in PAPER_VARIANTS:
            problem = fit_problem(ref, other)
            if other == variant:
                assert problem is None, (name, problem)
            else:
                assert problem is not None, (name, other)
        assert detect_variant(ref) == variant


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_weights_convert_into_their_variant_only(parity, tmp_path, name):
    keys = paper_keys(parity, name)
    ref = random_state(keys)
    path = tmp_path / f"hotformerloc_{name}.pth"
    torch.save(ref, path)
    ck = convert_reference(path)  # detected
    assert ck.model == PAPER[name]
    assert ck.config["unit_edge"] == "wrap"
    assert ck.config["range_filter"] == "drop"
    assert ck.config["input_scale"] is None
    assert ck.extra["source"]["layout"] == "pth"
    model = create_model(ck.model, **ck.config)
    model.load_state_dict(ck.state_dict, strict=True)
    assert sum(p.numel() for p in model.parameters()) == sum(t.numel() for t in ref.values())
    for k, t in reference_to_ours(ref).items():
        assert torch.equal(ck.state_dict[k], t), k
    del model
    for other in PAPER_VARIANTS:
        if other == PAPER[name]:
            continue
        with pytest.raises(CheckpointError, match=r"does not fit .*(shape|key|missing)") as e:
            convert_reference(path, other)
        assert str(path) in str(e.value)


def test_detection_of_a_foreign_model_asks_for_variant(parity, tmp_path):
    path = tmp_path / "small.pth"
    torch.save(load_file(parity / "small_weights.safetensors"), path)
    with pytest.raises(CheckpointError, match="pass --variant"):
        convert_reference(path)


# ------------------------------------------------------------------ reading files
def small_ckpt(parity: Path, path: Path) -> tuple[dict, dict]:
    """A training checkpoint written the way the reference's trainer writes one."""
    ref = load_file(parity / "small_weights.safetensors")
    ema = {f"module.{k}": v + 0.25 for k, v in ref.items()}
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    opt = torch.optim.Adam(params, lr=1e-3)
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: (e + 1) / 5)
    steps = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[10, 20], gamma=0.1)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, steps], milestones=[5])
    sum((p**2).sum() for p in params).backward()
    opt.step()
    sched.step()
    state = sched.state_dict()
    assert isinstance(state["_schedulers"][1]["milestones"], Counter)
    torch.save(
        {
            "epoch": 7,
            "wandb_id": "a1b2c3",
            "best_avg_AR_1": np.float64(0.8125),
            "model_state_dict": ref,
            "optim_state_dict": opt.state_dict(),
            "sched_state_dict": state,
            "model_ema_state_dict": ema,
        },
        path,
    )
    return ref, {k.removeprefix("module."): v for k, v in ema.items()}


def test_ckpt_with_numpy_scalar_reads_safely(parity, tmp_path):
    path = tmp_path / "run_best.ckpt"
    ref, ema = small_ckpt(parity, path)
    with pytest.raises(Exception, match="numpy"):  # the default allow-list refuses it
        torch.load(path, weights_only=True)
    got = read_reference_file(path)
    assert list(got) == list(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    got_ema = read_reference_file(path, ema=True)
    assert all(torch.equal(got_ema[k], ema[k]) for k in ema)
    # layout from the content, not the name
    renamed = tmp_path / "weights.pth"
    renamed.write_bytes(path.read_bytes())
    ck = convert_reference(renamed, "hotformerloc-tiny", SMALL, ema=True)
    assert ck.extra["source"]["layout"] == "ckpt-ema"


def test_pth_has_no_ema_copy(parity, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(load_file(parity / "small_weights.safetensors"), path)
    with pytest.raises(CheckpointError, match="EMA"):
        read_reference_file(path, ema=True)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"backbone.backbone.x": torch.ones(1), "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refused by safe loading"):
        read_reference_file(path)
    assert not marker.exists()


def test_truncated_and_wrapped_files_are_clear_errors(parity, tmp_path):
    good = tmp_path / "w.pth"
    torch.save(load_file(parity / "small_weights.safetensors"), good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
        read_reference_file(cut)
    assert "\n" not in str(e.value)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": load_file(parity / "small_weights.safetensors")}, wrapped)
    with pytest.raises(CheckpointError, match="'state_dict'"):
        read_reference_file(wrapped)
    with pytest.raises(CheckpointError, match="file not found"):
        read_reference_file(tmp_path / "missing.pth")


# ------------------------------------------------------------------ descriptor parity
def descriptor(model: torch.nn.Module, cloud: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.eval().embed([torch.from_numpy(cloud)]).numpy()


@pytest.mark.parametrize(("fixture", "overrides"), [("small", SMALL), ("smallcyl", SMALLCYL)])
def test_converted_fixture_reproduces_reference_descriptor(parity, tmp_path, fixture, overrides):
    path = tmp_path / f"{fixture}.pth"
    torch.save(load_file(parity / f"{fixture}_weights.safetensors"), path)
    ck = convert_reference(path, "hotformerloc-tiny", overrides)
    assert ck.sha256 == ck.extra["source"]["sha256"]
    assert ck.extra["source"]["reference_commit"] == REFERENCE_COMMIT
    model = create_model(ck.model, **ck.config)
    model.load_state_dict(ck.state_dict, strict=True)
    got = descriptor(model, np.load(parity / "small_cloud.npy"))
    want = np.load(parity / f"{fixture}_outputs.npz")["descriptor"]
    assert np.abs(got - want).max() <= 1e-5


def test_load_model_of_reference_file_equals_saved_conversion(parity, tmp_path):
    path = tmp_path / "x.pth"
    torch.save(load_file(parity / "small_weights.safetensors"), path)
    direct, ck = load_model(path, variant="hotformerloc-tiny")
    assert not direct.training
    out = tmp_path / "x.safetensors"
    sha = save_converted(convert_reference(path, "hotformerloc-tiny"), out)
    reloaded, ck2 = load_model(out)
    assert ck2 is not None and ck2.sha256 == sha
    assert ck2.model == ck.model and ck2.config == ck.config and ck2.extra == ck.extra
    a, b = direct.state_dict(), reloaded.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    cloud = np.load(parity / "small_cloud.npy")
    np.testing.assert_array_equal(descriptor(direct, cloud), descriptor(reloaded, cloud))


def test_expected_shapes_match_a_real_model():
    real = create_model("hotformerloc-tiny").state_dict()
    assert expected_shapes("hotformerloc-tiny") == {k: tuple(v.shape) for k, v in real.items()}
