"""Multi-staged backprop equals the plain full-batch gradient; DDP replicas stay identical."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from ddp_worker import batch, train

from hotformerloc import create_model
from hotformerloc.octree import build_octree
from hotformerloc.train.losses import build_loss
from hotformerloc.train.trainer import multistage_step


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_multistage_gradient_equals_full_batch_gradient() -> None:
    torch.manual_seed(0)
    model = create_model("hotformerloc-tiny", drop_path=0.0).train()
    octrees, chunks, pos, neg = batch(0)
    loss_fn = build_loss("truncated_smooth_ap")

    out, emb = multistage_step(model, octrees, chunks, pos, neg, loss_fn)
    staged = _grads(model)
    model.zero_grad()

    # plain: one octree of the whole batch, loss, backward
    clouds = []
    for o in octrees:
        for b in range(o.batch_size):
            clouds.append(o.points[o.batch_id[o.depth] == b])
    full = model(build_octree(clouds, 6))
    plain = loss_fn(full, pos, neg)
    plain.loss.backward()
    reference = _grads(model)

    assert torch.allclose(emb, full.detach(), atol=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(plain.loss.detach()), abs=1e-6)
    assert set(staged) == set(reference) == {n for n, _ in model.named_parameters()}
    for name, g in reference.items():
        err = (staged[name] - g).abs().max() / g.abs().max().clamp_min(1e-12)
        assert err < 1e-4, (name, float(err))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "overrides",
    [{}, {"pooling": "gem", "output_dim": 64}],  # GeM: some parameters get no gradient
    ids=["pyramid_attn", "gem"],
)
def test_ddp_two_processes_gloo_replicas_identical_and_equal_single(
    tmp_path, overrides: dict
) -> None:
    steps = 2
    out = str(tmp_path / "w")
    mp.spawn(train, args=(2, steps, out, _free_port(), overrides), nprocs=2, join=True)
    train(0, 1, steps, str(tmp_path / "single"), 0, overrides)
    r0 = torch.load(f"{out}.0", weights_only=True)
    r1 = torch.load(f"{out}.1", weights_only=True)
    single = torch.load(str(tmp_path / "single.0"), weights_only=True)
    torch.manual_seed(0)  # the workers' initialisation
    init = create_model("hotformerloc-tiny", drop_path=0.0, **overrides).state_dict()
    moved = 0
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"replicas differ at {k}"
        assert torch.allclose(r0[k], single[k], atol=1e-5), f"DDP != single process at {k}"
        moved += int(not torch.equal(r0[k], init[k]))
    assert moved > len(r0) // 2  # training really changed the weights
