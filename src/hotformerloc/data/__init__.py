"""Training and evaluation data: benchmark reader, tuples, pair sampler, augmentation, loaders.

The benchmark reader (:class:`Benchmark`, :class:`DatasetError`) is torch-free and imported
eagerly; the torch-based names (loaders, sampler, tuples, augmentations) are imported on
first use, so ``import hotformerloc.data.benchmark`` does not import torch.

See ``docs/data.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hotformerloc.data.benchmark import Benchmark, DatasetError

if TYPE_CHECKING:
    from hotformerloc.data.augment import AugmentConfig, augment_sample, augment_set
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

#: Public name -> the module that defines it (imported on first access).
_LAZY = {
    "AugmentConfig": "hotformerloc.data.augment",
    "augment_sample": "hotformerloc.data.augment",
    "augment_set": "hotformerloc.data.augment",
    "Batch": "hotformerloc.data.loader",
    "Collate": "hotformerloc.data.loader",
    "SubmapDataset": "hotformerloc.data.loader",
    "batch_seed": "hotformerloc.data.loader",
    "embedding_loader": "hotformerloc.data.loader",
    "make_loader": "hotformerloc.data.loader",
    "PairBatchSampler": "hotformerloc.data.sampler",
    "Tuples": "hotformerloc.data.tuples",
    "batch_masks": "hotformerloc.data.tuples",
    "build_tuples": "hotformerloc.data.tuples",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
