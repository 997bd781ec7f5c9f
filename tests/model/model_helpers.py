"""Helpers of the model tests: small structured clouds and small models."""

from __future__ import annotations

import torch

from hotformerloc import create_model
from hotformerloc.model import HOTFormerLoc


def scene(n: int = 2000, seed: int = 0, extent: float = 20.0) -> torch.Tensor:
    """(n, 3) float32 metric-like scene: ground plane, a few trunks and a box, plus noise."""
    g = torch.Generator().manual_seed(seed)
    n_ground = n // 2
    n_trunk = n // 4
    n_box = n - n_ground - n_trunk
    ground = torch.cat(
        [(torch.rand(n_ground, 2, generator=g) * 2 - 1) * extent, torch.zeros(n_ground, 1)], 1
    )
    centres = (torch.rand(5, 2, generator=g) * 2 - 1) * extent * 0.8
    which = torch.randint(0, 5, (n_trunk,), generator=g)
    angle = torch.rand(n_trunk, generator=g) * 6.2832
    trunk = torch.stack(
        [
            centres[which, 0] + 0.3 * torch.cos(angle),
            centres[which, 1] + 0.3 * torch.sin(angle),
            torch.rand(n_trunk, generator=g) * 8,
        ],
        1,
    )
    box = torch.rand(n_box, 3, generator=g) * torch.tensor([6.0, 4.0, 3.0]) + torch.tensor(
        [seed % 7 - 3.0, 2.0, 0.0]
    )
    pts = torch.cat([ground, trunk, box])
    return pts + 0.02 * torch.randn(pts.shape, generator=g)


def normalised_scene(n: int = 2000, seed: int = 0) -> torch.Tensor:
    """:func:`scene` scaled into [-0.99, 0.99] (for configs without point normalisation)."""
    pts = scene(n, seed)
    pts = pts - (pts.amax(0) + pts.amin(0)) / 2
    return pts * (1.98 / (pts.amax(0) - pts.amin(0)).amax())


def tiny(**overrides: object) -> HOTFormerLoc:
    """The tiny variant with ``overrides``, deterministic init."""
    torch.manual_seed(0)
    return create_model("hotformerloc-tiny", **overrides)
