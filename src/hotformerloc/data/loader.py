"""Data set, batch collation (augmentation, octrees, masks) and data loaders.

Determinism: a batch's augmentation draws come from a ``torch.Generator`` seeded by a hash
of ``(Collate.seed, the batch's local indices in order)``. The sampler's batches are a
function of ``(seed, epoch)``, so the augmentation is a function of ``(seed, epoch, batch
number)``, independent of the worker count, of which worker collates a batch, and of
process restarts. (The same ordered batch drawn in two epochs gets the same augmentation;
with thousands of elements per batch this does not happen in practice.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from hotformerloc.data.augment import AugmentConfig, augment_sample, augment_set
from hotformerloc.data.benchmark import Benchmark
from hotformerloc.data.tuples import Tuples, batch_masks
from hotformerloc.model import ModelConfig, crop_and_scale, prepare_points
from hotformerloc.octree import Octree, bbox_normalise, build_octree


class SubmapDataset(Dataset[Tensor]):
    """Clouds of selected benchmark rows.

    Args:
        benchmark: the benchmark.
        indices: (N,) global row indices; item ``j`` is row ``indices[j]`` (local index j).
        yaw_deg: rotate every cloud by this angle (degrees, counter-clockwise) about the
            z axis of its submap frame (test-time rotation views; 0 = as stored).
        align_yaw: first rotate each cloud by its submap's heading
            (:meth:`Benchmark.headings`, read from ``poses.csv``) into the world's
            orientation, so that all clouds share one orientation (training with known
            poses; never for queries).
    """

    def __init__(
        self,
        benchmark: Benchmark,
        indices: np.ndarray,
        yaw_deg: float = 0.0,
        align_yaw: bool = False,
    ) -> None:
        indices = np.asarray(indices, np.int64)
        n = len(benchmark)
        if indices.ndim != 1 or (len(indices) and not 0 <= indices.min() <= indices.max() < n):
            raise ValueError(f"indices must be (N,) row indices in [0, {n})")
        self.benchmark = benchmark
        self.indices = indices
        yaw = np.full(len(indices), np.radians(yaw_deg))
        if align_yaw:
            yaw += benchmark.headings(indices)
        self.yaw = None if not align_yaw and yaw_deg % 360 == 0 else yaw

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> Tensor:
        """(M, 3) float32 cloud of local index ``j``, as stored (rotated by its heading if
        ``align_yaw``, then by ``yaw_deg``)."""
        if not 0 <= j < len(self.indices):
            raise IndexError(f"local index {j} out of range [0, {len(self.indices)})")
        xyz = self.benchmark.load_cloud(int(self.indices[j]))
        if self.yaw is not None:
            c, s = np.cos(self.yaw[j]), np.sin(self.yaw[j])
            xyz = xyz @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32).T
        return torch.from_numpy(np.ascontiguousarray(xyz, np.float32))


class _WithIndex(Dataset[tuple[int, Tensor]]):
    """``(j, dataset[j])``: lets :class:`Collate` know which elements it collates."""

    def __init__(self, dataset: Dataset[Tensor]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # torch stubs: Dataset has no __len__

    def __getitem__(self, j: int) -> tuple[int, Tensor]:
        return int(j), self.dataset[j]


@dataclass(frozen=True, eq=False)
class Batch:
    """One collated batch of B samples.

    * ``indices``: (B,) int64 local indices, in batch order;
    * ``octrees``: one octree per chunk (no neighbour tables: the model builds them);
    * ``chunks``: ``chunks[k]`` is the slice of batch positions in ``octrees[k]``
      (consecutive, ``split_size`` each, the last may be smaller; together they cover
      ``0..B``), and ``octrees[k].batch_size == len(range(B)[chunks[k]])``;
    * ``positives_mask``, ``negatives_mask``: (B, B) bool (see
      :func:`~hotformerloc.data.tuples.batch_masks`), ``None`` without tuples;
    * ``num_points``: points over the batch after augmentation and the range filter.
    """

    indices: np.ndarray
    octrees: list[Octree]
    chunks: list[slice]
    positives_mask: Tensor | None
    negatives_mask: Tensor | None
    num_points: int

    def to(self, device: torch.device | str) -> Batch:
        """A copy with the octrees and masks on ``device``."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return replace(
            self,
            octrees=[o.to(device) for o in self.octrees],
            positives_mask=move(self.positives_mask),
            negatives_mask=move(self.negatives_mask),
        )


def batch_seed(seed: int, indices: np.ndarray) -> int:
    """63-bit seed of a batch's augmentation: a hash of ``seed`` and the ordered indices."""
    h = hashlib.blake2b(digest_size=8, person=b"hfl-augment")
    h.update(np.int64(seed).tobytes())
    h.update(np.ascontiguousarray(indices, "<i8").tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


class Collate:
    """``[(local index, cloud), ...] -> Batch`` (picklable: runs in loader workers).

    Per cloud: ``model_config.max_z`` and ``input_scale``, bounding-box normalisation (if
    ``model_config.normalize_points``), then
    :func:`augment_sample`; then :func:`augment_set` over the batch; then the range filter
    and cylindrical map (``prepare_points`` without a second normalisation), so the range
    filter comes after *all* augmentations (spec 1.1 caveat). Without augmentation the points
    equal ``prepare_points(cloud, model_config)``. Then one octree per chunk of
    ``split_size`` samples at ``model_config.octree_depth``, and the masks from ``tuples``.

    Args:
        model_config: input pipeline settings (depths, normalisation, coordinates).
        tuples: training tuples for the masks; ``None`` (evaluation): masks are ``None``.
        augment: augmentation settings; ``None``: none.
        split_size: samples per octree chunk (>= 1).
        seed: base seed of the augmentation (module doc).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        tuples: Tuples | None,
        augment: AugmentConfig | None,
        split_size: int,
        seed: int,
    ) -> None:
        if not isinstance(split_size, int) or split_size < 1:
            raise ValueError(f"split_size must be an int >= 1, got {split_size!r}")
        self.model_config = model_config
        self.tuples = tuples
        self.augment = augment
        self.split_size = split_size
        self.seed = seed
        self._prepare_config = replace(
            model_config, normalize_points=False, max_z=None, input_scale=None
        )

    def __call__(self, items: list[tuple[int, Tensor]]) -> Batch:
        if not items:
            raise ValueError("Collate: empty batch")
        indices = np.array([j for j, _ in items], np.int64)
        clouds = [crop_and_scale(c, self.model_config, f"local index {j}") for j, c in items]
        if self.model_config.normalize_points:
            clouds = [bbox_normalise(c) for c in clouds]
        if self.augment is not None:
            g = torch.Generator().manual_seed(batch_seed(self.seed, indices))
            clouds = [augment_sample(c, self.augment, g) for c in clouds]
            clouds = augment_set(clouds, self.augment, g)
        points = [
            prepare_points(c, self._prepare_config, f"local index {j}")
            for j, c in zip(indices.tolist(), clouds, strict=True)
        ]
        cfg = self.model_config
        chunks = [
            slice(s, min(s + self.split_size, len(points)))
            for s in range(0, len(points), self.split_size)
        ]
        octrees = [
            build_octree(
                points[c],
                cfg.octree_depth,
                cfg.full_depth,
                neighbours=False,
                unit_edge=cfg.unit_edge,
            )
            for c in chunks
        ]
        pos, neg = batch_masks(indices, self.tuples) if self.tuples is not None else (None, None)
        return Batch(
            indices=indices,
            octrees=octrees,
            chunks=chunks,
            positives_mask=pos,
            negatives_mask=neg,
            num_points=sum(int(p.shape[0]) for p in points),
        )


def make_loader(
    dataset: Dataset[Tensor],
    batch_sampler: Sampler[list[int]],
    collate: Collate,
    num_workers: int,
    prefetch: int = 2,
) -> DataLoader:
    """A DataLoader of :class:`Batch` (workers re-created every epoch, so call the
    sampler's ``set_epoch`` before iterating; ``num_workers=0`` collates in-process)."""
    if num_workers < 0 or prefetch < 1:
        raise ValueError(f"need num_workers >= 0 and prefetch >= 1, got {num_workers}, {prefetch}")
    return DataLoader(
        _WithIndex(dataset),
        batch_sampler=batch_sampler,
        collate_fn=collate,
        num_workers=num_workers,
        prefetch_factor=prefetch if num_workers else None,
        persistent_workers=False,
    )


def embedding_loader(
    dataset: Dataset[Tensor], model_config: ModelConfig, batch_size: int, num_workers: int
) -> DataLoader:
    """Evaluation loader: consecutive batches of ``batch_size`` in dataset order (the last
    may be smaller), no augmentation, no masks, one octree per batch."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    n = len(dataset)  # type: ignore[arg-type]  # torch stubs: Dataset has no __len__
    sampler = BatchSampler(SequentialSampler(range(n)), batch_size, drop_last=False)
    collate = Collate(model_config, None, None, split_size=batch_size, seed=0)
    return make_loader(dataset, sampler, collate, num_workers)
