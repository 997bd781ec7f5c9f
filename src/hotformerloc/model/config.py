"""Model configuration: every architecture knob of HOTFormerLoc (spec 2.1, 8.2) as data.

:class:`ModelConfig` is a frozen dataclass validated on construction: an impossible value
raises :class:`~hotformerloc.config.ConfigError` whose message starts with the key name.
Convert from plain dicts / YAML with :func:`model_config_from_dict` (unknown keys are errors
naming the key) and back with :func:`hotformerloc.config.to_dict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from hotformerloc.config import ConfigError, from_dict, require

AdapeMode = Literal["none", "pos", "var", "cov"]
Pooling = Literal["pyramid_attn", "gem", "pyramid_gem"]
Coordinates = Literal["cartesian", "cylindrical"]
RangeFilter = Literal["drop", "clamp"]
UnitEdge = Literal["clamp", "wrap"]
WindowBatching = Literal["per_sample", "reference"]

#: The fields of :class:`ModelConfig` that say how a raw cloud becomes octree input.
INPUT_PIPELINE_FIELDS = (
    "max_z",
    "input_scale",
    "normalize_points",
    "range_filter",
    "coordinates",
    "unit_edge",
    "octree_depth",
    "full_depth",
)

#: Statistics fed to the ADaPE MLP per mode: mean (3), + per-axis variance (3), or + the
#: full upper-triangular covariance (6).
ADAPE_DIMS: dict[str, int] = {"pos": 3, "var": 6, "cov": 9}


@dataclass(frozen=True)
class ModelConfig:
    """HOTFormerLoc architecture and input pipeline (defaults: the CS-Wild-Places model).

    Network:
        channels: (C0, C1): width of the OctFormer stage (stem output) and of the HOTFormer
            stage / pyramid / pooled tokens.
        num_blocks: (OctFormer blocks, HOTFormer blocks).
        num_heads: (OctFormer heads, HOTFormer heads); each must divide its width.
        patch_size: K, tokens per attention window.
        dilation: D of the dilated OctFormer windows (odd-indexed blocks).
        num_pyramid_levels: L, levels of the HOTFormer pyramid (depths d-3 ... d-2-L).
        disable_rt: ablation: no relay tokens / RTSA; the HOTFormer stage becomes plain
            OctFormer blocks per level with alternating dilation.
        adape_mode: relay-token position encoding from window statistics (``cov``: mean +
            covariance, ``var``: mean + variances, ``pos``: mean); ``none``: relay tokens
            are initialised from CPE(F) instead (the Wild-Places model).
        disable_rpe: ablation: no relative position bias in window attention.
        drop_path: maximum stochastic-depth rate (linear from 0 over all blocks).
        pooling: ``pyramid_attn`` (PyramidAttnPoolMixer), ``gem`` (OctGeM on the finest
            pyramid level; needs ``output_dim == channels[1]``) or ``pyramid_gem``.
        k_pooled_tokens: learned queries per pyramid level (``pyramid_attn``); their sum M
            must be a multiple of 4 with ``output_dim`` divisible by M/4.
        output_dim: descriptor size.
        normalize_embeddings: L2-normalise the descriptor.
        grad_checkpoint: recompute each transformer block in backward (training memory).

    Input pipeline (:func:`~hotformerloc.model.network.prepare_points`, in this order;
    saved with every checkpoint, so a model prepares its input the way it was trained):
        max_z: first drop the points above this height, in the cloud's frame and units as
            given; ``None`` keeps them all. A height band common to ground scans and aerial
            submaps whose frames sit near the terrain (a forest's crowns, which a ground
            scan never sees from above, dominate the aerial submap).
        input_scale: multiply each cloud as given (e.g. metres) by this (``1/30``
            maps a 30 m-radius submap into [-1, 1]); ``None``: the clouds are already in
            the model's units (the reference's datasets).
        normalize_points: bounding-box normalise each cloud (scale-invariant).
        range_filter: ``drop`` points with a coordinate outside [-1, 1] (and, cylindrical,
            ``sqrt(x^2 + y^2) > 1``), as the reference; ``clamp`` keeps every point.
        coordinates: ``cartesian`` or scaled ``cylindrical`` (rho', phi', z').
        unit_edge: cell of a coordinate exactly +1: ``clamp`` to the last cell (ours) or
            ``wrap`` to cell 0 of that axis (ocnn; converted reference weights).
        octree_depth: d, depth of the input octree (leaves).
        full_depth: ocnn's dense depths (<= full_depth). Our octree keeps only non-empty
            nodes, which equals ocnn's nodes at every depth >= full_depth, so the
            coarsest pyramid depth ``d - 2 - num_pyramid_levels`` must be >= full_depth.

    Retrieval:
        query_views: how a query is searched: embedded turned about z to ``query_views``
            yaw angles (360° · v / V) and matched by its smallest distance over them, while
            database entries are embedded once, as stored. Models trained on co-oriented
            clouds (training ``data.align_yaw``) need it; 1 for the paper's models, which
            learn rotation invariance from augmentation.

    Runtime:
        window_batching: ``per_sample`` pads each sample's nodes separately (a descriptor
            does not depend on the rest of the batch); ``reference`` pads the batch once per
            depth as the reference does (reproduces its batched numbers exactly).
    """

    channels: tuple[int, ...] = (128, 256)
    num_blocks: tuple[int, ...] = (4, 10)
    num_heads: tuple[int, ...] = (8, 16)
    patch_size: int = 64
    dilation: int = 4
    num_pyramid_levels: int = 3
    disable_rt: bool = False
    adape_mode: AdapeMode = "cov"
    disable_rpe: bool = False
    drop_path: float = 0.5
    pooling: Pooling = "pyramid_attn"
    k_pooled_tokens: tuple[int, ...] = (74, 36, 18)
    output_dim: int = 256
    normalize_embeddings: bool = True
    grad_checkpoint: bool = False
    max_z: float | None = None
    input_scale: float | None = None
    normalize_points: bool = True
    range_filter: RangeFilter = "drop"
    coordinates: Coordinates = "cartesian"
    unit_edge: UnitEdge = "clamp"
    octree_depth: int = 7
    full_depth: int = 2
    query_views: int = 1
    window_batching: WindowBatching = "per_sample"

    def __post_init__(self) -> None:
        for key in ("channels", "num_blocks", "num_heads"):
            value = getattr(self, key)
            require(len(value) == 2, f"{key} must have 2 entries (OctFormer, HOTFormer)")
            require(all(v >= 1 for v in value), f"{key} entries must be >= 1, got {value}")
        require(self.channels[0] % 4 == 0, "channels[0] must be a multiple of 4 (stem C/4)")
        for i in range(2):
            require(
                self.channels[i] % self.num_heads[i] == 0,
                f"num_heads[{i}]={self.num_heads[i]} must divide channels[{i}]={self.channels[i]}",
            )
        require(self.patch_size >= 1, f"patch_size must be >= 1, got {self.patch_size}")
        require(self.dilation >= 1, f"dilation must be >= 1, got {self.dilation}")
        require(
            self.num_pyramid_levels >= 1,
            f"num_pyramid_levels must be >= 1, got {self.num_pyramid_levels}",
        )
        require(0.0 <= self.drop_path < 1.0, f"drop_path must be in [0, 1), got {self.drop_path}")
        require(self.output_dim >= 1, f"output_dim must be >= 1, got {self.output_dim}")
        require(self.full_depth >= 1, f"full_depth must be >= 1, got {self.full_depth}")
        require(self.query_views >= 1, f"query_views must be >= 1, got {self.query_views}")
        coarsest = self.octree_depth - 2 - self.num_pyramid_levels
        require(
            coarsest >= 1 and self.octree_depth <= 16,
            f"octree_depth={self.octree_depth} must be in [{self.num_pyramid_levels + 3}, 16] "
            f"(the stem and {self.num_pyramid_levels} pyramid levels downsample "
            f"{self.num_pyramid_levels + 2} times)",
        )
        require(
            coarsest >= self.full_depth,
            f"full_depth={self.full_depth} must be <= the coarsest pyramid depth {coarsest} "
            f"(octree_depth - 2 - num_pyramid_levels): ocnn makes depths below full_depth "
            "dense, which this octree does not reproduce",
        )
        require(
            self.input_scale is None or 0 < self.input_scale < math.inf,
            f"input_scale must be > 0 and finite, or null, got {self.input_scale}",
        )
        require(
            self.max_z is None or math.isfinite(self.max_z),
            f"max_z must be finite, or null, got {self.max_z}",
        )
        if self.pooling == "pyramid_attn":
            k = self.k_pooled_tokens
            require(
                len(k) == self.num_pyramid_levels,
                f"k_pooled_tokens must have num_pyramid_levels={self.num_pyramid_levels} "
                f"entries, got {len(k)}",
            )
            require(all(v >= 1 for v in k), f"k_pooled_tokens entries must be >= 1, got {k}")
            total = sum(k)
            require(
                total % 4 == 0 and self.output_dim % (total // 4) == 0,
                f"k_pooled_tokens sum M={total} must be a multiple of 4 and output_dim="
                f"{self.output_dim} divisible by M/4",
            )
        if self.pooling == "gem":
            require(
                self.output_dim == self.channels[1],
                f"output_dim={self.output_dim} must equal channels[1]={self.channels[1]} "
                "for gem pooling",
            )

    def input_pipeline(self) -> dict[str, Any]:
        """The input-pipeline fields (:data:`INPUT_PIPELINE_FIELDS`) as a plain dict."""
        return {k: getattr(self, k) for k in INPUT_PIPELINE_FIELDS}

    @property
    def drop_path_rates(self) -> list[float]:
        """Per-block stochastic-depth rates, linear in [0, drop_path] over all blocks.

        Index i < num_blocks[0]: OctFormer block i; index num_blocks[0] + i: HOTFormer
        block i (its RTSA and all its per-level H-OSA blocks share the rate).
        """
        n = self.num_blocks[0] + self.num_blocks[1]
        if n == 1:
            return [0.0]
        return [self.drop_path * i / (n - 1) for i in range(n)]

    def rpe_bound(self, dilation: int) -> int:
        """RPE clamp b = floor(0.8 K sqrt(dilation)) (51 / 102 for K = 64, D = 1 / 4)."""
        return math.floor(0.8 * self.patch_size * math.sqrt(dilation))


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Strict conversion of a plain mapping; unknown keys / bad values -> ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"model config: expected a mapping, got {type(data).__name__}")
    return from_dict(ModelConfig, data)
