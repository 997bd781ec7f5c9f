"""``hotformerloc convert``: reference .pth / .ckpt -> our checkpoint; errors are one line,
exit code 2, and write nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hotformerloc.cli.main import entrypoint
from hotformerloc.model.checkpoint import load_checkpoint, load_model
from hotformerloc.model.reference import reference_to_ours


@pytest.fixture(scope="module")
def weights(shared_data: Path) -> dict[str, torch.Tensor]:
    path = shared_data / "reference_parity" / "small_weights.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return load_file(path)


@pytest.fixture
def cli(monkeypatch, capsys):
    def run(*args: str | Path) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["hotformerloc", *map(str, args)])
        try:
            entrypoint()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def write_ckpt(path: Path, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A training checkpoint laid out as the reference's trainer writes it; returns the EMA
    weights (reference names, without ``module.``)."""
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
    ema = {k: v * 0.5 + 0.01 for k, v in weights.items()}
    torch.save(
        {
            "epoch": 12,
            "wandb_id": "3xk9q2",
            "best_avg_AR_1": np.float64(0.734375),
            "model_state_dict": dict(weights),
            "optim_state_dict": opt.state_dict(),
            "sched_state_dict": state,
            "model_ema_state_dict": {f"module.{k}": v for k, v in ema.items()},
        },
        path,
    )
    return ema


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pth_and_ckpt_convert_to_identical_weights(tmp_path, weights, cli, tiny_convert_args):
    TINY = tiny_convert_args
    pth, ckpt = tmp_path / "hotformerloc_small.pth", tmp_path / "small_best.ckpt"
    torch.save(weights, pth)
    ema = write_ckpt(ckpt, weights)

    code, out, err = cli("convert", pth, *TINY, "--out", tmp_path / "a.safetensors")
    assert code == 0, err
    assert "hotformerloc-tiny" in out and "608,884 parameters" in out and "a.safetensors" in out
    code, _, err = cli("convert", ckpt, *TINY, "--out", tmp_path / "b.safetensors")
    assert code == 0, err
    code, _, err = cli("convert", ckpt, *TINY, "--ema", "--out", tmp_path / "c.safetensors")
    assert code == 0, err

    a, b, c = (tensors(tmp_path / f"{n}.safetensors") for n in "abc")
    assert same(a, b)
    assert same(a, reference_to_ours(weights))
    assert same(c, reference_to_ours(ema)) and not same(c, a)

    ck = load_checkpoint(tmp_path / "b.safetensors")
    assert ck.extra["source"]["layout"] == "ckpt"
    assert ck.config["octree_depth"] == 7 and ck.config["normalize_points"] is False
    assert ck.config["unit_edge"] == "wrap"
    assert load_checkpoint(tmp_path / "c.safetensors").extra["source"]["layout"] == "ckpt-ema"
    model, _ = load_model(tmp_path / "a.safetensors")
    assert not model.training


def test_wrong_variant_truncated_and_unknown_key_write_nothing(
    tmp_path, weights, cli, tiny_convert_args
):
    TINY = tiny_convert_args
    pth = tmp_path / "w.pth"
    torch.save(weights, pth)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(pth.read_bytes()[: os.path.getsize(pth) // 3])
    extra = tmp_path / "extra.pth"
    torch.save(
        {**weights, "backbone.backbone.octf_stage.1.blocks.0.norm1.weight": torch.ones(32)}, extra
    )
    out = tmp_path / "o.safetensors"
    cases = [
        ((pth, "--variant", "hotformerloc-oxford"), "shape"),
        ((pth,), "pass --variant"),
        ((cut, *TINY), "truncated or corrupt"),
        ((extra, *TINY), "octf_stage.1.blocks.0.norm1.weight"),
        ((pth, "--ema", *TINY), "EMA"),
        ((pth, *TINY, "--set", "octree_dpth=7"), "octree_dpth"),
    ]
    for args, message in cases:
        code, _, err = cli("convert", *args, "--out", out)
        assert code == 2, (args, err)
        assert message in err, (args, err)
        assert str(args[0]) in err
        assert err.strip().count("\n") == 0, err
        assert "Traceback" not in err
        assert not out.exists()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_output_must_be_safetensors(tmp_path, weights, cli, tiny_convert_args):
    TINY = tiny_convert_args
    pth = tmp_path / "w.pth"
    torch.save(weights, pth)
    code, _, err = cli("convert", pth, *TINY, "--out", tmp_path / "o.pth")
    assert code == 2 and ".safetensors" in err
    assert not (tmp_path / "o.pth").exists()


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "hotformerloc_oxford.pth"
    torch.save({"backbone.backbone.x": torch.ones(1), "payload": _RunsCode(marker)}, evil)
    out = tmp_path / "o.safetensors"
    r = subprocess.run(
        [sys.executable, "-m", "hotformerloc.cli.main", "convert", str(evil), "--out", str(out)],
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    assert "refused by safe loading" in r.stderr and str(evil) in r.stderr
    assert "Traceback" not in r.stderr
    assert not marker.exists()
    assert not out.exists()
