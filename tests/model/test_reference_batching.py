"""``window_batching="reference"``: the reference's batch-wide window padding (spec 1.4).

Parity with the reference's batched descriptors (``shared/data/reference_parity``), the
per-sample mode's batch independence, and the window / mask / relay-token layout on a
hand-made two-sample octree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import scene, tiny
from safetensors.torch import load_file

from hotformerloc import create_model
from hotformerloc.model import HOTFormerLoc
from hotformerloc.model.blocks import DepthView, RelayTokenInit
from hotformerloc.model.layers import MASK_VALUE
from hotformerloc.model.reference import reference_to_ours
from hotformerloc.octree import Octree, build_octree, node_corner_coords, window_partition

PARITY = "reference_parity"


def parity_model(shared_data: Path, window_batching: str) -> HOTFormerLoc:
    """The ``small`` fixture weights in our ``hotformerloc-tiny`` equivalent."""
    model = create_model(
        "hotformerloc-tiny",
        octree_depth=7,
        normalize_points=False,
        window_batching=window_batching,
    )
    weights = load_file(str(shared_data / PARITY / "small_weights.safetensors"))
    model.load_state_dict(reference_to_ours(weights), strict=True)
    return model.eval()


def embed(model: HOTFormerLoc, clouds: list[torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return model.embed(clouds)


@pytest.fixture(scope="module")
def parity(shared_data: Path) -> tuple[list[torch.Tensor], dict[str, np.ndarray]]:
    folder = shared_data / PARITY
    if not (folder / "small_batch_descriptors.npz").is_file():
        pytest.skip(f"{folder} has no batch fixtures")
    with np.load(folder / "small_batch_clouds.npz") as z:
        clouds = [torch.from_numpy(z[f"cloud{i}"]) for i in range(3)]
    with np.load(folder / "small_batch_descriptors.npz") as d:
        expected = {k: d[k] for k in ("alone", "batch")}
    return clouds, expected


def max_diff(a: torch.Tensor, b: np.ndarray) -> float:
    return float((a - torch.from_numpy(b)).abs().max())


def test_reference_batching_reproduces_the_reference_batch(shared_data: Path, parity):
    clouds, expected = parity
    out = embed(parity_model(shared_data, "reference"), clouds)
    for i in range(3):
        assert max_diff(out[i], expected["batch"][i]) <= 1e-5, i
    # The fixture does tell the two modes apart for the later samples.
    assert max_diff(out[1], expected["alone"][1]) > 1e-4
    assert max_diff(out[2], expected["alone"][2]) > 1e-4


def test_per_sample_batching_reproduces_the_reference_alone(shared_data: Path, parity):
    clouds, expected = parity
    model = parity_model(shared_data, "per_sample")
    batch = embed(model, clouds)
    for i, cloud in enumerate(clouds):
        alone = embed(model, [cloud])[0]
        assert max_diff(alone, expected["alone"][i]) <= 1e-5, i
        assert max_diff(batch[i], expected["alone"][i]) <= 1e-5, i
        torch.testing.assert_close(batch[i], alone, atol=1e-5, rtol=0)


def test_reference_batching_of_one_sample_equals_per_sample(shared_data: Path, parity):
    clouds, _ = parity
    ref = parity_model(shared_data, "reference")
    ours = parity_model(shared_data, "per_sample")
    for cloud in clouds:
        torch.testing.assert_close(embed(ref, [cloud]), embed(ours, [cloud]), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"disable_rpe": True},
        {"adape_mode": "none", "coordinates": "cylindrical"},
        {"disable_rt": True},
    ],
    ids=["default", "no-rpe", "cpe-init-cylindrical", "no-rt"],
)
def test_reference_batching_on_tiny_models(overrides: dict):
    clouds = [scene(1500 + 300 * i, seed=i) for i in range(3)]
    ref = tiny(window_batching="reference", **overrides).eval()
    ours = tiny(**overrides).eval()
    ours.load_state_dict(ref.state_dict())
    batch = embed(ref, clouds)
    assert torch.isfinite(batch).all()
    for i, cloud in enumerate(clouds):
        alone = embed(ours, [cloud])
        torch.testing.assert_close(embed(ref, [cloud]), alone, atol=1e-6, rtol=0)
        if i == 0:  # the first sample's windows do not move
            torch.testing.assert_close(batch[0], alone[0], atol=1e-5, rtol=0)
    # Later samples' windows start where the previous sample ended.
    assert float((batch[1:] - embed(ours, clouds)[1:]).abs().max()) > 1e-6


def test_reference_batching_trains():
    model = tiny(window_batching="reference").train()
    clouds = [scene(800, seed=1), scene(900, seed=2)]
    model.embed(clouds).pow(2).sum(1).mul(torch.tensor([1.0, -2.0])).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())


# ------------------------------------------------------------------ window level
def two_sample_octree() -> Octree:
    """Depth-1 nodes: sample 0 owns nodes 0, 1, 2 (keys 0, 1, 7), sample 1 nodes 3, 4
    (keys 2, 4)."""
    a = torch.tensor([[-0.5, -0.5, -0.5], [-0.5, -0.5, 0.5], [0.5, 0.5, 0.5]])
    b = torch.tensor([[-0.5, 0.5, -0.5], [0.5, -0.5, -0.5]])
    octree = build_octree([a, b], 2)
    assert octree.keys[1].tolist() == [0, 1, 7, 2, 4]
    assert octree.batch_id[1].tolist() == [0, 0, 0, 1, 1]
    return octree


def test_reference_windows_form_one_padded_sequence():
    octree = two_sample_octree()
    # K = 2, D = 2: the 5 nodes are padded once to 8 (a multiple of K * D = 4).
    w = window_partition(octree, 1, 2, 1, batching="reference", pad_dilation=2)
    assert w.index.tolist() == [[0, 1], [2, 3], [4, -1], [-1, -1]]
    assert w.sample.tolist() == [[0, 0], [0, 1], [1, 2], [2, 2]]  # padding = sample B = 2
    assert w.batch.tolist() == [0, 0, 1, 2]  # window 1 leaks: owned by its left-most sample
    assert w.num_windows_per_sample.tolist() == [2, 1]
    assert w.first_window.tolist() == [0, 2]
    assert w.num_owned == 3
    assert torch.equal(w.index.view(-1)[w.slot], torch.arange(5))
    # Dilated: inside each block of 4 positions, every 2nd one.
    wd = window_partition(octree, 1, 2, 2, batching="reference")
    assert wd.index.tolist() == [[0, 2], [1, 3], [4, -1], [-1, -1]]
    assert wd.sample.tolist() == [[0, 0], [0, 1], [1, 2], [2, 2]]
    assert wd.batch.tolist() == [0, 0, 1, 2]
    assert torch.equal(wd.index.view(-1)[wd.slot], torch.arange(5))
    # Without pad_dilation the sequence is padded to a multiple of K only.
    w1 = window_partition(octree, 1, 2, 1, batching="reference")
    assert w1.index.tolist() == [[0, 1], [2, 3], [4, -1]]
    # Per-sample mode for comparison: each sample padded on its own.
    ws = window_partition(octree, 1, 2, 1)
    assert ws.index.tolist() == [[0, 1], [2, -1], [3, 4]]
    assert ws.sample.tolist() == [[0, 0], [0, 2], [1, 1]]
    assert ws.batch.tolist() == [0, 0, 1] and ws.num_owned == 3


def test_reference_masks_and_relay_tokens():
    octree = two_sample_octree()
    view = DepthView(octree, 1, 2, "reference", pad_dilation=2)
    # One relay token per owned window (3); the padding-only window gets none.
    assert view.relay_sample.tolist() == [0, 0, 1]
    layout = view.relay_layout
    rt = [5, 6, 7]  # relay tokens follow the 5 nodes
    assert layout.index.tolist() == [[rt[0], 0, 1], [rt[1], 2, 3], [rt[2], 4, 0], [0, 0, 0]]
    assert layout.valid.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0], [0, 0, 0]]
    assert view.relay_batch_id.tolist() == [0, 0, 0, 1, 1, 0, 0, 1]
    # HAT mask of the leaky window [RT (sample 0), node 2 (0), node 3 (1)].
    mask = view.pair_mask(1, True, torch.float32)
    m = MASK_VALUE
    assert mask[0, 1].tolist() == [[0, 0, m], [0, 0, m], [m, m, 0]]
    assert mask[0, 2].tolist() == [[0, 0, m], [0, 0, m], [m, m, 0]]  # RT of sample 1; padding
    assert DepthView(octree, 1, 2).pair_mask(1, True, torch.float32) is None
    # Relay tokens: mean over the owner's nodes only, and their ADaPE statistics.
    init = RelayTokenInit(4, "pos")
    torch.nn.init.zeros_(init.adape[2].weight)
    torch.nn.init.zeros_(init.adape[2].bias)  # ADaPE(stats) = 0: RT = masked mean
    x = torch.randn(5, 4)
    with torch.no_grad():
        rts = init(x, view)
        torch.testing.assert_close(rts, torch.stack([x[0:2].mean(0), x[2], x[4]]))
        init.adape[2].weight.copy_(torch.eye(4))  # ADaPE(stats) = GELU(Linear(stats))
        corners = node_corner_coords(octree, 1)
        means = torch.stack([corners[0:2].mean(0), corners[2], corners[4]])
        torch.testing.assert_close(init(x, view) - rts, init.adape[1](init.adape[0](means)))
