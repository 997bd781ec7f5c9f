"""The whole network: invariances, batch independence, gradients, ablations, inputs."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from model_helpers import normalised_scene, scene, tiny

from hotformerloc import create_model
from hotformerloc.model import HOTFormerLoc
from hotformerloc.model.blocks import OctFormerBlock, PreNormBlock
from hotformerloc.model.pooling import OctGeM, PyramidAttnPoolMixer, PyramidOctGeM
from hotformerloc.octree import OctreeInputError


def embed(model: HOTFormerLoc, clouds: list[torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return model.embed(clouds)


def test_descriptor_shape_and_unit_norm(tiny_model: HOTFormerLoc, clouds: list[torch.Tensor]):
    d = embed(tiny_model, clouds)
    assert d.shape == (3, 256) and d.dtype == torch.float32
    torch.testing.assert_close(d.norm(dim=1), torch.ones(3))
    assert not torch.allclose(d[0], d[1], atol=1e-3)


def test_invariant_to_point_order(tiny_model: HOTFormerLoc, clouds: list[torch.Tensor]):
    cloud = clouds[1]
    perm = torch.randperm(cloud.shape[0], generator=torch.Generator().manual_seed(0))
    a = embed(tiny_model, [cloud])
    b = embed(tiny_model, [cloud[perm]])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"adape_mode": "none", "coordinates": "cylindrical"},
        {"disable_rt": True, "pooling": "pyramid_gem"},
    ],
    ids=["default", "cpe-init-cylindrical", "no-rt-pyramid-gem"],
)
def test_sample_alone_equals_sample_in_batch(clouds: list[torch.Tensor], overrides: dict):
    model = tiny(**overrides).eval()
    batch = embed(model, clouds)
    for i, cloud in enumerate(clouds):
        alone = embed(model, [cloud])
        torch.testing.assert_close(alone[0], batch[i], atol=1e-5, rtol=0)


def test_every_parameter_gets_a_finite_gradient(clouds: list[torch.Tensor]):
    model = tiny().train()
    model.embed(clouds[:2]).pow(2).sum(1).mul(torch.tensor([1.0, -2.0])).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad


def test_gradient_checkpointing_gives_the_same_gradients(clouds: list[torch.Tensor]):
    grads = []
    for ckpt in (False, True):
        model = tiny(drop_path=0.0, grad_checkpoint=ckpt).train()
        model.embed(clouds[:2])[:, :8].sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-5, rtol=1e-4)


def count(model: torch.nn.Module, cls: type) -> int:
    return sum(type(m) is cls for m in model.modules())


def test_default_architecture(tiny_model: HOTFormerLoc):
    cfg = tiny_model.config
    n0, n1 = cfg.num_blocks
    levels = cfg.num_pyramid_levels
    assert count(tiny_model, OctFormerBlock) == n0 + n1 * levels  # OctF + H-OSA
    assert count(tiny_model, PreNormBlock) == n1  # RTSA
    assert isinstance(tiny_model.pool, PyramidAttnPoolMixer)
    assert [q.shape[0] for q in tiny_model.pool.queries] == list(cfg.k_pooled_tokens)
    assert [b.dilation for b in tiny_model.octf_blocks] == [
        1 if i % 2 == 0 else cfg.dilation for i in range(n0)
    ]
    assert all(b.dilation == 1 for blk in tiny_model.hotf_blocks for b in blk.hosa)
    assert tiny_model.relay_init.adape[0].in_features == 9


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        (
            {"disable_rt": True},
            lambda m: (
                count(m, PreNormBlock) == 0
                and not hasattr(m, "relay_init")
                and [b.dilation for b in m.level_blocks[0]] == [1, 4]
                and len(m.level_blocks) == 3
            ),
        ),
        ({"adape_mode": "none"}, lambda m: hasattr(m.relay_init, "cpe")),
        ({"adape_mode": "pos"}, lambda m: m.relay_init.adape[0].in_features == 3),
        ({"adape_mode": "var"}, lambda m: m.relay_init.adape[0].in_features == 6),
        (
            {"num_pyramid_levels": 2, "k_pooled_tokens": (24, 8)},
            lambda m: len(m.pool.queries) == 2 and len(m.hotf_blocks[0].hosa) == 2,
        ),
        ({"pooling": "gem", "output_dim": 64}, lambda m: isinstance(m.pool, OctGeM)),
        ({"pooling": "pyramid_gem"}, lambda m: isinstance(m.pool, PyramidOctGeM)),
        ({"disable_rpe": True}, lambda m: all(b.rpe is None for b in m.octf_blocks)),
        ({"coordinates": "cylindrical"}, lambda m: True),
        ({"normalize_embeddings": False}, lambda m: True),
        (
            {"patch_size": 16, "dilation": 2, "drop_path": 0.1, "num_blocks": (3, 1)},
            lambda m: [b.dilation for b in m.octf_blocks] == [1, 2, 1],
        ),
        (
            {"channels": (16, 32), "num_heads": (1, 2), "octree_depth": 7, "output_dim": 128},
            lambda m: m.downsample.conv.out_channels == 32,
        ),
    ],
    ids=lambda v: "-".join(f"{k}={v[k]}" for k in v) if isinstance(v, dict) else "",
)
def test_ablation_switches(clouds: list[torch.Tensor], overrides: dict, check):
    model = tiny(**overrides).eval()
    assert check(model)
    d = embed(model, clouds[:2])
    assert d.shape == (2, model.config.output_dim)
    assert torch.isfinite(d).all()
    if model.config.normalize_embeddings:
        torch.testing.assert_close(d.norm(dim=1), torch.ones(2))


def test_ablations_change_parameter_count():
    def size(**o: object) -> int:
        return sum(p.numel() for p in tiny(**o).parameters())

    base = size()
    assert size(disable_rt=True) < base  # no RTSA, no ADaPE
    assert size(adape_mode="none") != base
    assert size(disable_rpe=True) < base
    assert size(num_pyramid_levels=2, k_pooled_tokens=(24, 8)) < base


def test_empty_and_nan_clouds_are_named_errors(tiny_model: HOTFormerLoc, clouds):
    with pytest.raises(OctreeInputError, match=r"clouds\[1\].*empty"):
        embed(tiny_model, [clouds[0], torch.zeros(0, 3)])
    bad = clouds[0].clone()
    bad[5, 1] = float("nan")
    with pytest.raises(OctreeInputError, match=r"clouds\[2\].*non-finite"):
        embed(tiny_model, [clouds[0], clouds[1], bad])
    with pytest.raises(OctreeInputError, match=r"clouds\[0\].*shape"):
        embed(tiny_model, [torch.zeros(5, 2)])
    with pytest.raises(ValueError, match="no clouds"):
        embed(tiny_model, [])


def test_cloud_outside_the_unit_cube_without_normalisation_is_an_error():
    model = tiny(normalize_points=False).eval()
    with pytest.raises(OctreeInputError, match=r"clouds\[0\].*no point"):
        embed(model, [torch.full((10, 3), 5.0)])


@pytest.mark.parametrize("coordinates", ["cartesian", "cylindrical"])
def test_single_point_cloud_gives_a_unit_descriptor(coordinates: str):
    model = tiny(coordinates=coordinates).eval()
    d = embed(model, [torch.tensor([[3.0, -2.0, 1.0]]), scene(500)])
    assert torch.isfinite(d).all()
    torch.testing.assert_close(d.norm(dim=1), torch.ones(2))
    alone = embed(model, [torch.tensor([[3.0, -2.0, 1.0]])])
    torch.testing.assert_close(alone[0], d[0], atol=1e-5, rtol=0)


def test_forward_rejects_too_shallow_octree(tiny_model: HOTFormerLoc):
    from hotformerloc.octree import build_octree

    with pytest.raises(ValueError, match="too shallow"):
        tiny_model(build_octree([normalised_scene(200)], 5))


def test_paper_variant_forward():
    torch.manual_seed(0)
    model = create_model("hotformerloc-cs-wild-places").eval()
    start = time.perf_counter()
    d = embed(model, [scene(2000)])
    assert time.perf_counter() - start < 30
    assert d.shape == (1, 256)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(1))


def test_tiny_forward_is_fast(tiny_model: HOTFormerLoc):
    octree = tiny_model.build_octree([scene(2000)])
    with torch.inference_mode():
        tiny_model(octree)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            tiny_model(octree)
            times.append(time.perf_counter() - start)
    assert min(times) < 0.1


def test_bf16_autocast_and_float64(tiny_model: HOTFormerLoc, clouds: list[torch.Tensor]):
    octree = tiny_model.build_octree(clouds[:2])
    with torch.inference_mode():
        ref = tiny_model(octree)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny_model(octree)
        double = copy.deepcopy(tiny_model).double()(octree)
    assert torch.isfinite(low).all()
    assert torch.nn.functional.cosine_similarity(low.float(), ref).min() > 0.99
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), ref, atol=1e-5, rtol=0)
