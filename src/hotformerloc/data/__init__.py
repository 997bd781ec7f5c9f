"""Training and evaluation data: benchmark reader, tuples, pair sampler, augmentation, loaders.

See ``docs/data.md``.
"""

from hotformerloc.data.augment import AugmentConfig, augment_sample, augment_set
from hotformerloc.data.benchmark import Benchmark, DatasetError
from hotformerloc.data.loader import (
    Batch,
    Collate,
    SubmapDataset,
    batch_seed,
    embedding_loader,
    make_loader,
)
from hotformerloc.data.sampler import PairBatchSampler
from hotformerloc.data.tuples import Tuples, batch_masks, build_tuples

__all__ = [
    "AugmentConfig",
    "Batch",
    "Benchmark",
    "Collate",
    "DatasetError",
    "PairBatchSampler",
    "SubmapDataset",
    "Tuples",
    "augment_sample",
    "augment_set",
    "batch_masks",
    "batch_seed",
    "build_tuples",
    "embedding_loader",
    "make_loader",
]
