"""The HOTFormerLoc network (spec 2): octree -> L2-normalised global descriptor.

Data flow for an input octree of depth d (``C0, C1 = config.channels``)::

    leaf mean points (N_d, 3)
    -> Stem: conv3 3->C0/4, conv2s2 ->C0/2, conv3, conv2s2 ->C0, conv3 (LN + ReLU each)
    -> OctFormer stage at depth d-2 (blocks alternate non-dilated / dilated windows)
    -> Downsample to depth d-3, C1 channels                                  = F_1
    -> pyramid F_j = Downsample(F_{j-1}) at depths d-3 ... d-2-L (built up front)
    -> relay tokens per window (masked mean + ADaPE, or mean of CPE(F))
    -> HOTFormer blocks (RTSA over each sample's relay tokens, then H-OSA per level)
       [disable_rt: per level, OctFormer blocks with alternating dilation]
    -> pooling head -> (B, output_dim) -> L2 normalisation
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hotformerloc.model.blocks import DepthView, HOTFormerBlock, OctFormerBlock, RelayTokenInit
from hotformerloc.model.config import ModelConfig
from hotformerloc.model.layers import AttentionLayout, OctreeConv, init_linear, serial_cpu
from hotformerloc.model.pooling import build_pooling
from hotformerloc.octree import (
    Octree,
    OctreeInputError,
    bbox_normalise,
    build_octree,
    clamp_to_unit,
    compute_neighbours,
    filter_to_unit,
    to_cylindrical,
)
from hotformerloc.octree.normalise import check_cloud

_T = TypeVar("_T")


def crop_and_scale(cloud: Tensor, config: ModelConfig, name: str = "cloud") -> Tensor:
    """Validation (non-empty (N, 3) float32/float64, finite), ``max_z``, ``input_scale``.

    Raises:
        OctreeInputError: naming ``name``: bad shape/dtype, empty, NaN/inf, or no point at
            or below ``max_z``.
    """
    xyz = check_cloud(cloud, name)
    if config.max_z is not None:
        xyz = xyz[xyz[:, 2] <= config.max_z]
        if xyz.shape[0] == 0:
            raise OctreeInputError(
                name,
                f"no point at or below max_z {config.max_z:g} (the model keeps the points up "
                "to that height in the cloud's frame: shift the cloud so that z = 0 is near "
                "the ground)",
            )
    if config.input_scale is not None:
        xyz = xyz * config.input_scale
    return xyz


def prepare_points(cloud: Tensor, config: ModelConfig, name: str = "cloud") -> Tensor:
    """One raw cloud -> points for the octree, per ``config``'s input pipeline (spec 1.1, 1.2).

    :func:`crop_and_scale`, then
    bounding-box normalisation if ``normalize_points``, the range filter (``drop``:
    ``|coord| <= 1``, and ``rho <= 1`` for cylindrical; ``clamp``: into [-1, 1], rho'
    clamped to 1), then the cylindrical transform if configured. A free function so data
    loader workers can prepare batches without a model.

    Raises:
        OctreeInputError: naming ``name``: bad shape/dtype, empty, NaN/inf, or no point
            left after the range filter.
    """
    xyz = crop_and_scale(cloud, config, name)
    if config.normalize_points:
        xyz = bbox_normalise(xyz)
    cylindrical = config.coordinates == "cylindrical"
    if config.range_filter == "clamp":
        xyz = clamp_to_unit(xyz, 1.0)  # cylindrical: rho > 1 clamps to rho' = 1
    else:
        xyz, _ = filter_to_unit(xyz, radial=cylindrical)
    if xyz.shape[0] == 0:
        raise OctreeInputError(name, "no point inside the unit cube after normalisation")
    return to_cylindrical(xyz) if cylindrical else xyz


def build_input_octree(
    clouds: Sequence[Tensor],
    config: ModelConfig,
    device: torch.device | str = "cpu",
    names: Sequence[str] | None = None,
) -> Octree:
    """The input octree of a batch of raw clouds for a model of ``config``: each cloud
    through :func:`prepare_points` (named ``names[b]``, default ``clouds[b]``), then one
    :func:`~hotformerloc.octree.build_octree` at the config's octree_depth / full_depth /
    unit_edge on ``device``. Needs no model, so data-loader workers can run it.

    Raises:
        OctreeInputError: a cloud is unusable (named).
    """
    names = names if names is not None else [f"clouds[{i}]" for i in range(len(clouds))]
    points = [prepare_points(c, config, n).to(device) for c, n in zip(clouds, names, strict=True)]
    return build_octree(points, config.octree_depth, config.full_depth, unit_edge=config.unit_edge)


class ConvNormReLU(nn.Module):
    """Octree conv (no bias) -> LayerNorm over channels -> ReLU (stem unit)."""

    def __init__(self, in_channels: int, out_channels: int, num_slots: int):
        super().__init__()
        self.conv = OctreeConv(in_channels, out_channels, num_slots)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: Tensor, index: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x, index)))


class Stem(nn.Module):
    """Spec 2.2: depth d -> d-2, 3 -> C channels (C/4, C/2, C widths)."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels
        self.conv1 = ConvNormReLU(3, c // 4, 27)
        self.down1 = ConvNormReLU(c // 4, c // 2, 8)
        self.conv2 = ConvNormReLU(c // 2, c // 2, 27)
        self.down2 = ConvNormReLU(c // 2, c, 8)
        self.proj = ConvNormReLU(c, c, 27)

    def forward(self, x: Tensor, views: dict[int, DepthView], depth: int) -> Tensor:
        """``x`` (N_depth, 3) -> (N_{depth-2}, C)."""
        x = self.conv1(x, views[depth].neighbours)
        x = self.down1(x, views[depth - 1].children)
        x = self.conv2(x, views[depth - 1].neighbours)
        x = self.down2(x, views[depth - 2].children)
        return self.proj(x, views[depth - 2].neighbours)


class Downsample(nn.Module):
    """Octree conv 2x2x2 stride 2 (with bias) -> LayerNorm (no activation)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = OctreeConv(in_channels, out_channels, 8, bias=True)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: Tensor, coarse: DepthView) -> Tensor:
        """``x`` (N_{d+1}, Cin) -> (N_d, Cout) at ``coarse.depth`` = d."""
        return self.norm(self.conv(x, coarse.children))


class HOTFormerLoc(nn.Module):
    """HOTFormerLoc place-recognition network.

    ``forward(octree)`` -> (B, output_dim) float descriptors (L2-normalised when
    ``config.normalize_embeddings``). ``embed(clouds)`` runs the whole input pipeline.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        cfg = config
        c0, c1 = cfg.channels
        h0, h1 = cfg.num_heads
        n0, n1 = cfg.num_blocks
        rates = cfg.drop_path_rates

        def bound(dilation: int) -> int | None:
            return None if cfg.disable_rpe else cfg.rpe_bound(dilation)

        def dilation(i: int) -> int:
            return 1 if i % 2 == 0 else cfg.dilation

        self.stem = Stem(c0)
        self.octf_blocks = nn.ModuleList(
            OctFormerBlock(c0, h0, rates[i], dilation(i), bound(dilation(i))) for i in range(n0)
        )
        self.downsample = Downsample(c0, c1)
        self.pyramid_downsamples = nn.ModuleList(
            Downsample(c1, c1) for _ in range(cfg.num_pyramid_levels - 1)
        )
        if cfg.disable_rt:
            self.level_blocks = nn.ModuleList(
                nn.ModuleList(
                    OctFormerBlock(c1, h1, rates[n0 + i], dilation(i), bound(dilation(i)))
                    for i in range(n1)
                )
                for _ in range(cfg.num_pyramid_levels)
            )
        else:
            self.relay_init = RelayTokenInit(c1, cfg.adape_mode)
            self.hotf_blocks = nn.ModuleList(
                HOTFormerBlock(c1, h1, cfg.num_pyramid_levels, rates[n0 + i], bound(1))
                for i in range(n1)
            )
        init_linear(self)  # backbone linears; the pooling head initialises its own
        self.pool = build_pooling(cfg)

    # ------------------------------------------------------------------ forward
    def _run(self, block: Callable[..., _T], *args: Any) -> _T:
        """``block(*args)``, recomputed in backward when gradient checkpointing is on."""
        if self.config.grad_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, octree: Octree) -> Tensor:
        """Descriptors of the B clouds of ``octree``.

        Args:
            octree: built by :func:`~hotformerloc.octree.build_octree` with depth
                ``d >= num_pyramid_levels + 3`` (normally ``config.octree_depth``), on the
                parameters' device. Missing neighbour tables are computed (in place).

        Returns:
            (B, output_dim) in the parameters' dtype; rows have unit L2 norm when
            ``config.normalize_embeddings``.
        """
        cfg = self.config
        d = octree.depth
        levels = cfg.num_pyramid_levels
        if d - 2 - levels < 1:
            raise ValueError(
                f"octree depth {d} is too shallow: this model needs >= {levels + 3} "
                f"(config octree_depth = {cfg.octree_depth})"
            )
        with serial_cpu(octree.points.device):
            return self._forward(octree)

    def _forward(self, octree: Octree) -> Tensor:
        cfg = self.config
        d = octree.depth
        levels = cfg.num_pyramid_levels
        compute_neighbours(octree, range(d - 2 - levels, d + 1))
        views = {
            k: DepthView(octree, k, cfg.patch_size, cfg.window_batching, cfg.dilation)
            for k in range(d - 2 - levels, d + 1)
        }
        dtype = self.stem.conv1.conv.weight.dtype

        x = self.stem(octree.points.to(dtype), views, d)
        for block in self.octf_blocks:
            x, _ = self._run(block, x, views[d - 2])
        feats = [self.downsample(x, views[d - 3])]
        for j, down in enumerate(self.pyramid_downsamples):
            feats.append(down(feats[-1], views[d - 4 - j]))
        level_views = [views[d - 3 - j] for j in range(levels)]

        if cfg.disable_rt:
            for j, blocks in enumerate(self.level_blocks):
                for block in cast(nn.ModuleList, blocks):  # torch stubs: items are Module
                    feats[j], _ = self._run(block, feats[j], level_views[j])
        else:
            relays = [self.relay_init(f, v) for f, v in zip(feats, level_views, strict=True)]
            relay_batch_id = torch.cat([v.relay_sample for v in level_views])
            relay_layout = AttentionLayout.group_by(relay_batch_id, octree.batch_size)
            for block in self.hotf_blocks:
                feats, relays = self._run(
                    block, feats, relays, level_views, relay_layout, relay_batch_id
                )
        out = self.pool(feats, level_views)
        return F.normalize(out, dim=1) if cfg.normalize_embeddings else out

    # ------------------------------------------------------------------ input pipeline
    def prepare_cloud(self, cloud: Tensor, name: str = "cloud") -> Tensor:
        """:func:`prepare_points` with this model's config."""
        return prepare_points(cloud, self.config, name)

    def build_octree(self, clouds: Sequence[Tensor]) -> Octree:
        """Prepared octree (``config.octree_depth``) of raw clouds, on the model's device."""
        if len(clouds) == 0:
            raise ValueError("embed: empty batch (no clouds)")
        names = [f"embed clouds[{i}]" for i in range(len(clouds))]
        device = self.stem.conv1.conv.weight.device
        return build_input_octree(clouds, self.config, device, names)

    def embed(self, clouds: Sequence[Tensor]) -> Tensor:
        """Descriptors of raw clouds: list of (N_b, 3) float tensors -> (B, output_dim).

        A cloud of a single point (or all points equal) is valid: it normalises to the
        origin and gets a unit-norm descriptor. Runs in the module's current mode; use
        ``model.eval()`` and ``torch.inference_mode()`` for retrieval.

        Raises:
            OctreeInputError: a cloud is empty, non-finite, malformed, or empty after the
                range filter (the message names ``clouds[i]``).
            ValueError: no clouds.
        """
        return self(self.build_octree(clouds))
