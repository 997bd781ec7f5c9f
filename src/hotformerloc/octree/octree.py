"""The batched octree data structure (contract shared by the builder and the network).

Semantics follow ocnn's ``nempty=True`` mode (spec 1.3): at every depth only non-empty
nodes exist; nodes of one sample are in ascending Morton-key (z-order) order and samples
are concatenated in batch order. A Morton ("shuffled") key interleaves the integer cell
coordinates with x most significant inside each 3-bit group: key bit 3i+2 = x bit i,
bit 3i+1 = y bit i, bit 3i = z bit i. Keys do not carry the batch index; ``batch_id`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Octree:
    """Octree of ``batch_size`` clouds, depths ``0..depth``.

    Per depth ``d`` (lists indexed by ``d``; ``N_d`` = non-empty nodes of depth d over the
    batch):

    * ``keys[d]``: (N_d,) int64 Morton keys in [0, 8**d), ascending within each sample;
    * ``batch_id[d]``: (N_d,) int64 sample index in [0, B), non-decreasing;
    * ``counts[d]``: (B,) int64 nodes per sample (sums to N_d).

    ``points``: (N_depth, 3) float32, the mean input point of each leaf (depth ``depth``),
    in the normalised frame [-1, 1] (the network's input feature "P").

    Lookup tables (filled by the builder; a depth missing from a dict was not requested):

    * ``neighbours[d]``: (N_d, 27) int64 indices into depth-d nodes of the same sample, -1
      where the neighbour cell is empty or outside the grid; slot for displacement
      (dx, dy, dz) in {-1, 0, 1}^3 is ``(dx+1)*9 + (dy+1)*3 + (dz+1)`` (13 = the node);
    * ``children[d]``: (N_d, 8) int64 indices into depth-(d+1) nodes, -1 where empty; slot
      = the child's low 3 key bits ``4x + 2y + z``;
    * ``parent[d]``: (N_d,) int64 index into depth-(d-1) nodes (d >= 1).

    ``coord_cache`` holds the tensors returned by :meth:`coords` (filled lazily).

    All tensors live on one device.
    """

    depth: int
    full_depth: int
    batch_size: int
    keys: list[Tensor]
    batch_id: list[Tensor]
    counts: list[Tensor]
    points: Tensor
    neighbours: dict[int, Tensor] = field(default_factory=dict)
    children: dict[int, Tensor] = field(default_factory=dict)
    parent: dict[int, Tensor] = field(default_factory=dict)
    coord_cache: dict[int, Tensor] = field(default_factory=dict, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return self.points.device

    def num_nodes(self, d: int) -> int:
        """Total non-empty nodes at depth ``d`` over the batch."""
        return int(self.keys[d].numel())

    def ptr(self, d: int) -> Tensor:
        """(B+1,) int64 offsets: sample b owns nodes ``ptr[b]:ptr[b+1]`` at depth ``d``."""
        return torch.cat([self.counts[d].new_zeros(1), torch.cumsum(self.counts[d], 0)])

    def coords(self, d: int) -> Tensor:
        """(N_d, 3) int64 integer cell coordinates ``(x, y, z)`` in ``[0, 2**d)`` of depth-d
        nodes, decoded from ``keys[d]`` on first use and cached in ``coord_cache``."""
        cached = self.coord_cache.get(d)
        if cached is None:
            from .build import morton_decode  # build imports this module

            cached = morton_decode(self.keys[d], d)
            self.coord_cache[d] = cached
        return cached

    def to(self, device: torch.device | str) -> Octree:
        """A copy with every tensor (tables and cached coordinates included) on ``device``."""

        def move(tables: dict[int, Tensor]) -> dict[int, Tensor]:
            return {d: t.to(device) for d, t in tables.items()}

        return Octree(
            depth=self.depth,
            full_depth=self.full_depth,
            batch_size=self.batch_size,
            keys=[t.to(device) for t in self.keys],
            batch_id=[t.to(device) for t in self.batch_id],
            counts=[t.to(device) for t in self.counts],
            points=self.points.to(device),
            neighbours=move(self.neighbours),
            children=move(self.children),
            parent=move(self.parent),
            coord_cache=move(self.coord_cache),
        )
