"""Every intermediate tensor stored by the reference implementation (``*_outputs.npz`` of
the parity fixtures) is reproduced by our network with the converted fixture weights.

The fixture weights (reference key names) are converted with
:func:`~hotformerloc.model.reference.convert_reference` into the ``ours_equivalent`` config
(so the input pipeline has the reference's ``unit_edge="wrap"`` semantics), then
``small_cloud.npy`` goes through ``model.embed`` with hooks that record each stage. Rows are
in the octree's node order on both sides; relay tokens and ADaPE statistics exist only for
windows that hold at least one node (README of the fixtures).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hotformerloc.model.reference import convert_reference, model_from_converted

FIXTURES = ("small", "smallcyl")
#: Absolute tolerances (README: descriptor <= 1e-5, intermediates <= 1e-4); keys exact.
ATOL = 1e-4
ATOL_DESCRIPTOR = 1e-5


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def run_with_hooks(model: torch.nn.Module, cloud: torch.Tensor) -> dict[str, np.ndarray]:
    """Our value of every array name the fixtures use, from one ``model.embed`` call (plus
    the octree and prepared points the model builds for the same cloud)."""
    got: dict[str, np.ndarray] = {}
    calls: dict[str, int] = {}

    def counter(name: str) -> int:
        calls[name] = calls.get(name, 0) + 1
        return calls[name] - 1

    def on_output(name: Callable[[], str]) -> Callable[..., None]:
        def hook(_module, _args, out) -> None:
            got[name()] = _as_numpy(out[0] if isinstance(out, tuple) else out)

        return hook

    handles = []

    def add(module: torch.nn.Module, hook: Callable[..., None], pre: bool = False) -> None:
        register = module.register_forward_pre_hook if pre else module.register_forward_hook
        handles.append(register(hook))

    def stem_in(_module, args) -> None:
        got["_stem_in"] = _as_numpy(args[0])

    add(model.stem, stem_in, pre=True)
    add(model.stem, on_output(lambda: "stem_out"))
    for i, block in enumerate(model.octf_blocks):
        add(block, on_output(lambda i=i: f"octf_block{i}_out"))
    add(model.downsample, on_output(lambda: "pyramid_level0_in"))
    for j, down in enumerate(model.pyramid_downsamples, start=1):
        add(down, on_output(lambda j=j: f"pyramid_level{j}_in"))
    add(model.relay_init, on_output(lambda: f"relay_init_level{counter('relay')}"))
    if hasattr(model.relay_init, "adape"):

        def adape_in(_module, args) -> None:
            got[f"adape_stats_level{counter('adape')}"] = _as_numpy(args[0])

        add(model.relay_init.adape, adape_in, pre=True)
    for b, block in enumerate(model.hotf_blocks):

        def hotf_out(_module, _args, out, b=b) -> None:
            feats, relays = out
            for j, (f, r) in enumerate(zip(feats, relays, strict=True)):
                got[f"hotf_block{b}_level{j}_feat"] = _as_numpy(f)
                got[f"hotf_block{b}_level{j}_relay"] = _as_numpy(r)

        add(block, hotf_out)

    def mixer_in(_module, args) -> None:
        got["pooled_tokens"] = _as_numpy(args[0])

    add(model.pool.mixer, mixer_in, pre=True)
    try:
        with torch.inference_mode():
            got["descriptor"] = _as_numpy(model.embed([cloud]))
            octree = model.build_octree([cloud])
            got["octree_input_points"] = _as_numpy(model.prepare_cloud(cloud))
    finally:
        for h in handles:
            h.remove()
    for d in range(1, octree.depth + 1):
        got[f"keys_d{d}"] = _as_numpy(octree.keys[d])
    got["leaf_points"] = _as_numpy(octree.points)
    # the network's input is the octree's leaf points
    np.testing.assert_array_equal(got.pop("_stem_in"), got["leaf_points"])
    return got


@pytest.fixture(scope="module")
def outputs(parity: Path, tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """{fixture: our arrays}, computed once per fixture."""
    tmp = tmp_path_factory.mktemp("reference_intermediates")
    cloud = torch.from_numpy(np.load(parity / "small_cloud.npy"))
    out = {}
    for fixture in FIXTURES:
        cfg = json.loads((parity / f"{fixture}_config.json").read_text())["ours_equivalent"]
        pth = tmp / f"{fixture}.pth"
        torch.save(load_file(parity / f"{fixture}_weights.safetensors"), pth)
        ck = convert_reference(pth, cfg["model"], cfg["overrides"])
        assert ck.config["unit_edge"] == "wrap"
        assert all(ck.config[k] == v for k, v in cfg["overrides"].items())
        model = model_from_converted(ck, pth).eval()
        out[fixture] = run_with_hooks(model, cloud)
    return out


def tolerance(name: str) -> float | None:
    """Absolute tolerance of a stored array (None: must be exactly equal)."""
    if re.fullmatch(r"keys_d\d+", name):
        return None
    if name == "descriptor":
        return ATOL_DESCRIPTOR
    return ATOL


KNOWN = re.compile(
    r"keys_d\d+|leaf_points|octree_input_points|stem_out|octf_block\d+_out"
    r"|pyramid_level\d+_in|adape_stats_level\d+|relay_init_level\d+"
    r"|hotf_block\d+_level\d+_(feat|relay)|pooled_tokens|descriptor"
)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_every_stored_intermediate_matches(parity, outputs, fixture):
    ours = outputs[fixture]
    problems: list[str] = []
    compared: list[str] = []
    with np.load(parity / f"{fixture}_outputs.npz") as npz:
        names = list(npz.files)
        for name in names:
            want = npz[name]
            if name not in ours:
                problems.append(f"{name}: not produced by our model")
                continue
            got = ours[name]
            compared.append(name)
            if got.shape != want.shape:
                problems.append(f"{name}: shape {got.shape} != stored {want.shape}")
                continue
            atol = tolerance(name)
            if atol is None:
                if got.dtype != want.dtype or not np.array_equal(got, want):
                    problems.append(f"{name}: not exactly equal ({got.dtype} vs {want.dtype})")
                continue
            diff = float(np.abs(got.astype(np.float64) - want).max())
            if not diff <= atol:
                problems.append(f"{name}: max |diff| {diff:.3g} > {atol:g}")
    assert not problems, "\n".join(problems)
    # every stored array was compared: a new stored array cannot be skipped silently
    assert sorted(compared) == sorted(names)
    assert all(KNOWN.fullmatch(n) for n in names), sorted(
        n for n in names if not KNOWN.fullmatch(n)
    )
    # and the fixture holds what the README lists (7 depths, 2 + 2 blocks, 3 levels)
    expected = {f"keys_d{d}" for d in range(1, 8)} | {
        "leaf_points",
        "stem_out",
        "octf_block0_out",
        "octf_block1_out",
        "pooled_tokens",
        "descriptor",
    }
    for j in range(3):
        expected |= {f"pyramid_level{j}_in", f"relay_init_level{j}"}
        expected |= {f"hotf_block{b}_level{j}_{k}" for b in range(2) for k in ("feat", "relay")}
        if fixture == "small":
            expected.add(f"adape_stats_level{j}")
    if fixture == "smallcyl":
        expected.add("octree_input_points")
    assert set(names) == expected


@pytest.mark.parametrize("fixture", FIXTURES)
def test_relay_tokens_only_for_windows_with_nodes(parity, outputs, fixture):
    """23, 6, 1 windows hold nodes at the three levels (the fixture config records it)."""
    cfg = json.loads((parity / f"{fixture}_config.json").read_text())
    windows = cfg["num_windows_per_level_stored"]
    ours = outputs[fixture]
    for j, nw in enumerate(windows):
        assert ours[f"relay_init_level{j}"].shape[0] == nw
        n = ours[f"pyramid_level{j}_in"].shape[0]
        assert nw == -(-n // cfg["reference_model_config_values"]["patch_size"])
    counts = cfg["node_counts_per_depth"]
    assert [ours[f"keys_d{d}"].shape[0] for d in range(1, 8)] == counts[1:]
