"""The pair batch sampler of spec 3.2 (MinkLoc3Dv2's batch sampler with k = 2)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from hotformerloc.data.tuples import Tuples


class PairBatchSampler(Sampler[list[int]]):
    """Batches of positive pairs, re-drawn every epoch.

    For an epoch, the elements are visited in a random order; an element already used is
    skipped, as is one without positives (it is marked used). Otherwise it is appended
    together with a random positive not yet used (if every positive is used: any positive,
    which can then appear twice in the batch), and both are marked used. A batch is emitted
    when it reaches ``batch_size``; the final partial batch is kept if it has at least
    ``drop_small`` elements. Visiting a random permutation while skipping used elements is
    the same as drawing a random unused element each time.

    Batches (lists of local indices into the training set) are a deterministic function of
    ``(seed, epoch)`` only: no global random state is read or changed.

    With ``groups`` (e.g. the world of each element; positives must lie in their anchor's
    group, as :func:`build_tuples` guarantees) every batch holds one group only: the same
    walk fills one batch per group. An option, off in the reference: with mixed batches of
    unrelated worlds, half the negatives are trivially easy.

    With ``sources`` (the (N,) source of each element, e.g. ``ground``/``aerial``) and
    ``cross_source`` > 0, an element's partner is drawn, with that probability, among its
    positives of *another* source (when it has any): more cross-source pairs per batch than
    uniform drawing gives (an option, off in the reference).

    Args:
        tuples: the training tuples (only ``positives`` is used).
        batch_size: elements per batch, even and >= 4.
        seed: base seed.
        drop_small: minimum size of the kept final partial batch (>= 2).
        groups: optional (N,) group label of each element.
        sources: optional (N,) source label of each element (needed by ``cross_source``).
        cross_source: probability in [0, 1] of drawing a cross-source partner.

    Raises:
        ValueError: bad ``batch_size``/``drop_small``, or no element has a positive.
    """

    def __init__(
        self,
        tuples: Tuples,
        batch_size: int,
        seed: int,
        drop_small: int = 4,
        groups: np.ndarray | None = None,
        sources: np.ndarray | None = None,
        cross_source: float = 0.0,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 4 or batch_size % 2:
            raise ValueError(f"batch_size must be an even int >= 4, got {batch_size!r}")
        if not isinstance(drop_small, int) or drop_small < 2:
            raise ValueError(f"drop_small must be an int >= 2, got {drop_small!r}")
        if not any(len(p) for p in tuples.positives):
            raise ValueError("PairBatchSampler: no training element has a positive")
        if groups is not None and len(groups) != len(tuples.positives):
            n = len(tuples.positives)
            raise ValueError(f"groups has {len(groups)} labels for {n} elements")
        if not 0 <= cross_source <= 1:
            raise ValueError(f"cross_source must be in [0, 1], got {cross_source!r}")
        if cross_source and (sources is None or len(sources) != len(tuples.positives)):
            raise ValueError("cross_source needs one source label per element")
        self.sources = None if sources is None else np.asarray(sources)
        self.cross_source = cross_source
        self.positives = tuples.positives
        self.groups = None if groups is None else np.asarray(groups)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_small = drop_small
        self.epoch = 0
        self.start = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch to draw; iteration begins at batch ``start`` (to resume an
        interrupted epoch: the skipped batches are not loaded)."""
        if epoch < 0 or start < 0:
            raise ValueError(f"epoch and start must be >= 0, got {epoch}, {start}")
        self.epoch = epoch
        self.start = start

    def batches(self, epoch: int) -> list[list[int]]:
        """Every batch of ``epoch`` (cached for the last epoch asked)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        used = np.zeros(len(self.positives), bool)
        out: list[list[int]] = []
        currents: dict[object, list[int]] = {}
        for e in rng.permutation(len(self.positives)).tolist():
            if used[e]:
                continue
            used[e] = True
            pos = self.positives[e]
            if len(pos) == 0:
                continue
            if self.cross_source and rng.random() < self.cross_source:
                assert self.sources is not None
                cross = pos[self.sources[pos] != self.sources[e]]
                pos = cross if len(cross) else pos
            free = pos[~used[pos]]
            other = int(rng.choice(free if len(free) else pos))
            used[other] = True
            key = 0 if self.groups is None else self.groups[e].item()
            current = currents.setdefault(key, [])
            current += [e, other]
            if len(current) == self.batch_size:
                out.append(current)
                currents[key] = []
        out.extend(c for c in currents.values() if len(c) >= self.drop_small)
        self._cache = (epoch, out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        yield from (list(b) for b in self.batches(self.epoch)[self.start :])

    def __len__(self) -> int:
        """Batches that ``__iter__`` yields for the current epoch (after ``start``)."""
        return max(len(self.batches(self.epoch)) - self.start, 0)
