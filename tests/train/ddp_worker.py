"""Worker of the DDP test (a module, so that spawned processes can import it)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from hotformerloc import create_model
from hotformerloc.octree import build_octree
from hotformerloc.train.losses import build_loss
from hotformerloc.train.trainer import Distributed, multistage_step


def batch(seed: int) -> tuple[list, list[slice], torch.Tensor, torch.Tensor]:
    """8 normalised clouds (4 places x 2 views) in 3 chunks, with their masks."""
    g = torch.Generator().manual_seed(seed)
    places = [torch.rand(300, 3, generator=g) * 1.6 - 0.8 for _ in range(4)]
    clouds = [p + 0.01 * torch.randn(p.shape, generator=g) for p in places for _ in range(2)]
    label = torch.arange(8) // 2
    same = label[:, None] == label[None, :]
    pos = same & ~torch.eye(8, dtype=torch.bool)
    chunks = [slice(0, 3), slice(3, 6), slice(6, 8)]
    octrees = [build_octree([c.clamp(-0.99, 0.99) for c in clouds[s]], 6) for s in chunks]
    return octrees, chunks, pos, ~same


def train(
    rank: int, world: int, steps: int, out: str, port: int, overrides: dict | None = None
) -> None:
    """``steps`` Adam steps of the tiny model (with ``overrides``); saves the final weights
    to ``out``."""
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = create_model("hotformerloc-tiny", drop_path=0.0, **(overrides or {}))
    ddp = Distributed(rank, world)
    wrapped: nn.Module = (
        nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=model.config.pooling == "gem"
        )
        if world > 1
        else model
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = build_loss("truncated_smooth_ap")
    model.train()
    for step in range(steps):
        octrees, chunks, pos, neg = batch(step)
        opt.zero_grad()
        multistage_step(wrapped, octrees, chunks, pos, neg, loss_fn, ddp=ddp)
        opt.step()
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, f"{out}.{rank}")
    if world > 1:
        dist.destroy_process_group()
