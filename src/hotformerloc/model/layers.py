"""Octree layers in pure PyTorch: sparse octree convolutions, CPE, RPE, batched windowed
multi-head attention over padded token groups, MLP and per-sample DropPath.

Conventions. Node features at one octree depth are a (N, C) tensor in the octree's node
order (z-order per sample, samples concatenated). The convolutions take their neighbour or
child table as :class:`SlotPairs` (built once per depth and forward). Everything is
device-agnostic and never leaves the tensor's device.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Additive attention-mask value of masked keys: finite, so that a query row whose keys are
#: all masked (it is always a dropped padding row) gives a uniform softmax instead of NaN,
#: and large enough that exp() of it underflows to exactly 0 in float32 / bfloat16.
MASK_VALUE = -1.0e4

#: Target size of the temporaries of the sparse octree convolutions on CPU (see
#: :meth:`SlotPairs.tiles`).
CHUNK_BYTES = 4 << 20

#: Dense depthwise convs of at most this many output elements (rows x channels) gather all
#: 27 slots at once: 3 ops instead of 52 (the per-op cost dominates small inputs, most of
#: all when parts run at once on threads).
DW_GATHER_ALL = 1 << 16

#: Octree convs with at most this many inputs per output row (slots x input channels, e.g.
#: the 3-channel first conv) gather them side by side and run one matmul per chunk at
#: inference, whatever the table's fill: there is no tile plan to build per octree.
IM2COL_WIDTH = 128

#: Conv tables at least this full (outside the centre slot) are computed densely
#: (zeros for empty neighbours), sparser ones over their non-empty pairs only.
DENSE_FILL = 0.35


#: Torch threads of the matmul-heavy ops inside :func:`serial_cpu` (None: outside it).
_MATMUL_THREADS: ContextVar[int | None] = ContextVar("matmul_threads", default=None)
#: Parts that :func:`split_run` cuts work into (1: no splitting; set by :func:`serial_cpu`).
_SPLIT_PARTS: ContextVar[int] = ContextVar("split_parts", default=1)
#: Whether :func:`serial_cpu` switches threads at all (the forward's CPU thread policy).
SERIAL_CPU = True
#: Whether :func:`serial_cpu` also runs row- or window-parallel parts on Python threads.
SPLIT_CPU = True
#: Work smaller than this many rows (per part) is not split.
MIN_SPLIT_ROWS = 128

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _forget_pool() -> None:
    """In a forked child: the parent's worker threads do not exist there."""
    global _POOL, _POOL_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _pool(workers: int) -> ThreadPoolExecutor:
    """The process's split worker threads (grown to ``workers`` on demand), each set to one
    torch thread once (OpenMP's thread count is per calling thread: a fresh thread would
    run its matmuls on every core)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(
                workers,
                thread_name_prefix="hotformerloc-split",
                initializer=torch.set_num_threads,
                initargs=(1,),
            )
        return _POOL


@contextlib.contextmanager
def serial_cpu(device: torch.device) -> Iterator[None]:
    """CPU inference thread policy (no grad; nothing otherwise): the body runs on one torch
    thread, except for the ops inside :func:`matmul_threads`, which get the thread count
    in force on entry, and the work passed to :func:`split_run`, which is cut into that
    many parts run at once on Python threads (each on one torch thread).

    With ``OMP_WAIT_POLICY=PASSIVE`` each multi-threaded op wakes sleeping threads, which
    costs more than a second core saves on the gathers and element-wise ops of this network
    (measured: a (806, 256) ``index_select`` 29 us on one thread, 42-69 us on two); a part
    of a block per thread keeps every core busy with no per-op wake-up.
    """
    threads = torch.get_num_threads()
    off = device.type != "cpu" or threads == 1 or not SERIAL_CPU or torch.is_grad_enabled()
    if off or _MATMUL_THREADS.get():
        yield
        return
    token = _MATMUL_THREADS.set(threads)
    parts = _SPLIT_PARTS.set(threads if SPLIT_CPU else 1)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        _SPLIT_PARTS.reset(parts)
        _MATMUL_THREADS.reset(token)


@contextlib.contextmanager
def matmul_threads() -> Iterator[None]:
    """Inside :func:`serial_cpu`: the body runs on all of its threads (matmuls, attention)."""
    threads = _MATMUL_THREADS.get()
    if threads is None:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(1)


def split_parts(n: int, min_rows: int = MIN_SPLIT_ROWS) -> int:
    """How many parts :func:`split_run` cuts ``n`` rows into here (1: run as one)."""
    return max(1, min(_SPLIT_PARTS.get(), n // max(min_rows, 1)))


def split_bounds(n: int, parts: int) -> list[int]:
    """``parts + 1`` ascending cut points of [0, n) into near-equal ranges."""
    return [n * i // parts for i in range(parts + 1)]


@dataclass(frozen=True)
class Job:
    """Work over the rows (or groups) [0, n) that :func:`run_jobs` may cut into ranges:
    ``fn(a, b)`` computes and writes the outputs of rows [a, b) only. No range is cut
    shorter than ``min_rows``."""

    n: int
    fn: Callable[[int, int], object]
    min_rows: int = MIN_SPLIT_ROWS


def splitting(x: Tensor, w: Tensor) -> bool:
    """Whether work on ``x`` with weight ``w`` is cut up here: inside :func:`serial_cpu`
    with several threads, in inference (see :func:`in_place_ok`)."""
    return _SPLIT_PARTS.get() > 1 and in_place_ok(x, w)


def _drain(
    tasks: Iterator[tuple[Callable[[int, int], object], int, int]],
    lock: threading.Lock,
    inference: bool,
) -> None:
    """Run ``fn(a, b)`` from ``tasks`` until it is empty, on this thread's one torch thread
    without gradients (inference mode as the caller's: grad modes are per thread), no
    nested splitting."""
    matmul = _MATMUL_THREADS.set(None)
    parts = _SPLIT_PARTS.set(1)
    try:
        with torch.inference_mode(inference), torch.no_grad():
            while True:
                with lock:
                    task = next(tasks, None)
                if task is None:
                    return
                fn, a, b = task
                fn(a, b)
    finally:
        _SPLIT_PARTS.reset(parts)
        _MATMUL_THREADS.reset(matmul)


def run_jobs(jobs: Sequence[Job]) -> None:
    """Run every job: inside :func:`serial_cpu` each job is cut into up to as many
    near-equal ranges as threads (at least ``min_rows`` each) and the ranges of all jobs
    are run at once, each thread taking the next range when it is free (list the largest
    jobs first); elsewhere ``fn(0, n)`` of each job in turn, here."""
    threads = _SPLIT_PARTS.get()
    tasks = []
    for job in jobs:
        bounds = split_bounds(job.n, split_parts(job.n, job.min_rows))
        tasks += [(job.fn, a, b) for a, b in itertools.pairwise(bounds)]
    if threads == 1 or len(tasks) == 1:
        for fn, a, b in tasks:
            fn(a, b)
        return
    pending = iter(tasks)
    lock = threading.Lock()
    inference = torch.is_inference_mode_enabled()
    workers = min(threads, len(tasks)) - 1
    pool = _pool(workers)
    futures = [pool.submit(_drain, pending, lock, inference) for _ in range(workers)]
    try:
        _drain(pending, lock, inference)
    finally:
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def split_run(n: int, fn: Callable[[int, int], object], min_rows: int = MIN_SPLIT_ROWS) -> None:
    """:func:`run_jobs` of the one job ``Job(n, fn, min_rows)``."""
    run_jobs([Job(n, fn, min_rows)])


def trunc_normal_(t: Tensor, std: float = 0.02) -> Tensor:
    """``nn.init.trunc_normal_(t, std=std)``: the reference's call, truncating at +-2
    (absolute, so effectively an untruncated normal for std 0.02)."""
    return nn.init.trunc_normal_(t, std=std)


def init_linear(module: nn.Module) -> None:
    """Trunc-normal(0.02) weights and zero biases for every nn.Linear inside ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class PairTile:
    """The non-empty, non-centre (output, input) pairs of a range of output nodes.

    * ``rows``: the output nodes (a slice of 0..N_out);
    * ``slots``: (S,) int64 kernel slots that have pairs in this tile;
    * ``src``: (S, P) int64 input row of each pair in the zero-row-first input (see
      :func:`with_zero_row`: node i is row i + 1), each slot padded to the tile's largest
      slot (P pairs) with 0, the zero row;
    * ``order``: (Q,) int64 flat positions (in S * P) of the Q real pairs sorted by output
      node; ``offsets``: (R,) int64 start of each output node's run in ``order``.
    """

    rows: slice
    slots: Tensor
    src: Tensor
    order: Tensor
    offsets: Tensor

    def gather(self, xp: Tensor) -> Tensor:
        """Input rows of the pairs, (S, P, C), from ``xp`` = ``with_zero_row(x)``."""
        return xp.index_select(0, self.src.view(-1)).view(*self.src.shape, xp.shape[1])

    def reduce(self, vals: Tensor) -> Tensor:
        """Per-pair values (S, P, C) -> (R, C) sums over each output node's pairs.

        A gather-and-sum (``embedding_bag``) rather than a scatter-add, which is several
        times slower on CPU.
        """
        return F.embedding_bag(self.order, vals.view(-1, vals.shape[-1]), self.offsets, mode="sum")


@dataclass(frozen=True)
class SlotPairs:
    """The neighbour (S = 27) or child (S = 8) table of an octree conv, prepared.

    Built from a neighbour table (N, 27) (slot ``(dx+1)*9 + (dy+1)*3 + (dz+1)``; slot 13,
    the ``centre``, maps every node to itself) or a child table (N_parent, 8) (slot
    ``4x + 2y + z``), -1 = empty:

    * ``table``: (N_out, S) int64 input row in the zero-row-first input (see
      :func:`with_zero_row`): node i is i + 1, empty (-1) is 0, the zero row; and
      :attr:`table_t` its (S, N_out) transpose (for the dense computation);
    * ``fill``: fraction of non-empty entries outside the centre slot; tables less than
      :data:`DENSE_FILL` full are computed sparsely, over :meth:`tiles`.
    """

    table: Tensor
    centre: int | None
    fill: float
    _tiles: dict[int, list[PairTile]] = field(default_factory=dict, repr=False, compare=False)

    @staticmethod
    def from_table(table: Tensor, centre: int | None = None) -> SlotPairs:
        """``table`` (N_out, S) int64 input nodes, -1 = empty; ``centre``: identity slot."""
        num_out, num_slots = table.shape
        shifted = table + 1
        cells = num_out * (num_slots - (centre is not None))
        pairs = int(torch.count_nonzero(shifted)) - (num_out if centre is not None else 0)
        return SlotPairs(
            table=shifted,
            centre=centre,
            fill=pairs / max(cells, 1),
        )

    @property
    def num_out(self) -> int:
        return int(self.table.shape[0])

    @cached_property
    def table_t(self) -> Tensor:
        """(S, N_out) contiguous transpose of :attr:`table`."""
        return self.table.t().contiguous()

    @property
    def sparse(self) -> bool:
        """Whether the convolutions compute this table sparsely (less than
        :data:`DENSE_FILL` full)."""
        return self.fill < DENSE_FILL

    def tiles(self, pair_bytes: int, device: torch.device, parts: int = 1) -> list[PairTile]:
        """The pairs cut into output-row tiles of at most ``CHUNK_BYTES / pair_bytes`` pairs
        on CPU (one tile on other devices), and into at least ``parts`` tiles when there
        are enough output rows; built once per size and cached.

        Large CPU temporaries are returned to the OS when freed and page-faulted again on
        every allocation, which costs more than the arithmetic; small ones are recycled.
        """
        max_pairs = CHUNK_BYTES // max(pair_bytes, 1) if device.type == "cpu" else 0
        if parts > 1:
            share = -(-self.num_pairs // parts)
            max_pairs = min(max_pairs, share) if max_pairs else share
        tiles = self._tiles.get(max_pairs)
        if tiles is None:
            tiles = self._make_tiles(max_pairs)
            self._tiles[max_pairs] = tiles
        return tiles

    @cached_property
    def num_pairs(self) -> int:
        """Non-empty entries outside the centre slot."""
        centre = self.num_out if self.centre is not None else 0
        return int(torch.count_nonzero(self.table)) - centre

    def _make_tiles(self, max_pairs: int) -> list[PairTile]:
        valid = self.table > 0
        if self.centre is not None:
            valid[:, self.centre] = False
        node, slot = valid.nonzero().unbind(1)  # node-major, slots ascending per node
        ends = torch.cumsum(torch.count_nonzero(valid, dim=1), 0)  # pairs up to each node
        bounds = [0, self.num_out]
        total = node.numel()
        if 0 < max_pairs < total:
            cuts = torch.arange(max_pairs, total, max_pairs, device=ends.device)
            inner = torch.searchsorted(ends, cuts, right=True).tolist()
            bounds = sorted({0, self.num_out, *[c for c in inner if 0 < c < self.num_out]})
        first = [0, *ends[[b - 1 for b in bounds[1:]]].tolist()]  # pair range of each tile
        return [
            self._tile(valid[a:b], node[p:q], slot[p:q], slice(a, b))
            for a, b, p, q in zip(bounds, bounds[1:], first, first[1:], strict=False)
        ]

    def _tile(self, valid: Tensor, node: Tensor, slot: Tensor, rows: slice) -> PairTile:
        """Tile of the output nodes ``rows``: ``valid`` their (R, S) non-centre entries,
        ``(node, slot)`` their pairs, node-major."""
        num_slots = self.table.shape[1]
        counts = torch.bincount(slot, minlength=num_slots)
        slots = counts.nonzero().view(-1)
        width = max(int(counts.max()), 1) if slot.numel() else 1
        # Rank of each pair inside its slot, then its position in the (S, P) layout.
        local = node - rows.start
        rank = torch.cumsum(valid, 0)[local, slot] - 1
        pos = (torch.cumsum(counts > 0, 0) - 1)[slot] * width + rank
        src = slot.new_zeros(slots.numel() * width)
        src[pos] = self.table.view(-1)[node * num_slots + slot]
        per_node = torch.bincount(local, minlength=rows.stop - rows.start)
        return PairTile(
            rows=rows,
            slots=slots,
            src=src.view(-1, width),
            order=pos,  # the pairs are node-major already
            offsets=torch.cumsum(per_node, 0) - per_node,
        )


def in_place_ok(x: Tensor, w: Tensor) -> bool:
    """Whether a conv may accumulate in place into reused buffers: no autograd graph to
    keep (inference) and no autocast to apply."""
    grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
    return not grad and not torch.is_autocast_enabled(x.device.type)


def with_zero_row(x: Tensor) -> Tensor:
    """(N, C) -> (N + 1, C): a zero row 0 (the target of empty entries), then ``x``."""
    return torch.cat([x.new_zeros(1, x.shape[1]), x])


class OctreeConv(nn.Module):
    """Octree convolution (ocnn's ``nempty`` convolution: empty neighbours count as zeros).

    ``num_slots`` = 27 gives the 3x3x3 stride-1 conv over the neighbour table; ``num_slots``
    = 8 gives the 2x2x2 stride-2 conv over each parent's children. Dense tables: per slot,
    one gather of the (N_out, Cin) neighbours (zeros where empty) and one matmul
    accumulated in place. Sparse tables, per tile of output nodes: the non-empty pairs of
    every slot are gathered, multiplied by their slot's weight (one batched matmul) and
    summed per output node. Weight (num_slots, Cin, Cout), Xavier-uniform with fan_in =
    num_slots * Cin, fan_out = num_slots * Cout (ocnn's fan formula); optional bias (Cout,)
    initialised to 0.
    """

    def __init__(self, in_channels: int, out_channels: int, num_slots: int, bias: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_slots = num_slots
        self.weight = nn.Parameter(torch.empty(num_slots, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        bound = math.sqrt(6.0 / (num_slots * (in_channels + out_channels)))
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor, pairs: SlotPairs) -> Tensor:
        """``x`` (N_in, Cin) -> (N_out, Cout)."""
        w = self.weight
        centre = pairs.centre
        xp = with_zero_row(x)
        if self.in_channels * self.num_slots <= IM2COL_WIDTH and in_place_ok(x, w):
            out = x.new_empty(pairs.num_out, self.out_channels)
            split_run(pairs.num_out, lambda a, b: self._im2col_rows(xp, pairs, a, b, out))
        elif pairs.sparse:
            pair_bytes = (self.in_channels + self.out_channels) * x.element_size()
            parts = split_parts(pairs.num_out)
            tiles = pairs.tiles(pair_bytes, x.device, parts)
            if parts > 1 and len(tiles) > 1:
                out = x.new_empty(pairs.num_out, self.out_channels)

                def tile_part(i: int, j: int) -> None:
                    for tile in tiles[i:j]:
                        out[tile.rows] = self._tile(x, xp, tile, centre)

                split_run(len(tiles), tile_part, min_rows=1)
            else:
                outs = [self._tile(x, xp, tile, centre) for tile in tiles]
                out = outs[0] if len(outs) == 1 else torch.cat(outs)
        elif in_place_ok(x, w):
            out = x.new_empty(pairs.num_out, self.out_channels)
            split_run(pairs.num_out, lambda a, b: self._dense_rows(x, xp, pairs, a, b, out))
        else:
            # Out-of-place, so that autocast applies and autograd sees every step.
            if centre is not None:
                out = x @ w[centre]
            else:
                out = x.new_zeros(pairs.num_out, self.out_channels)
            for s in range(self.num_slots):
                if s != centre:
                    out = torch.addmm(out, xp.index_select(0, pairs.table_t[s]), w[s])
        return out if self.bias is None else out + self.bias

    def _im2col_rows(self, xp: Tensor, pairs: SlotPairs, a: int, b: int, out: Tensor) -> None:
        """Output rows [a, b) into ``out`` (inference, few input channels): all slots'
        inputs gathered side by side (zeros where empty) and one matmul, per chunk."""
        width = self.num_slots * self.in_channels
        w = self.weight.view(width, self.out_channels)
        step = max(1, CHUNK_BYTES // (width * xp.element_size()))
        for start in range(a, b, step):
            stop = min(b, start + step)
            g = xp.index_select(0, pairs.table[start:stop].reshape(-1)).view(-1, width)
            with matmul_threads():
                torch.mm(g, w, out=out[start:stop])

    def _tile(self, x: Tensor, xp: Tensor, tile: PairTile, centre: int | None) -> Tensor:
        """The output rows of one sparse tile, (R, Cout), bias excluded."""
        w = self.weight
        g = tile.gather(xp)
        with matmul_threads():
            prod = torch.bmm(g, w.index_select(0, tile.slots))
        y = tile.reduce(prod)
        if centre is not None:
            with matmul_threads():
                y = torch.addmm(y, x[tile.rows], w[centre])
        return y

    def _dense_rows(
        self, x: Tensor, xp: Tensor, pairs: SlotPairs, a: int, b: int, out: Tensor
    ) -> None:
        """Output rows [a, b) of the dense path into ``out`` (inference, in place): one
        (b - a, Cin) gather into one reused buffer and one matmul-accumulate per slot."""
        w = self.weight
        centre = pairs.centre
        o = out[a:b]
        with matmul_threads():
            if centre is not None:
                torch.mm(x[a:b], w[centre], out=o)
            else:
                o.zero_()
        buf = x.new_empty(b - a, x.shape[1])
        # All slots' index rows and weights as views up front: less Python between ops
        # (each op hands the GIL to the other part's thread and takes it back).
        cols = pairs.table_t[:, a:b].unbind(0)
        ws = w.unbind(0)
        for s in range(self.num_slots):
            if s != centre:
                torch.index_select(xp, 0, cols[s], out=buf)
                with matmul_threads():
                    o.addmm_(buf, ws[s])


class OctreeDWConv(nn.Module):
    """Depthwise 3x3x3 octree conv (no bias): ``out[n, c] = sum_s w[s, c] x[nb[n, s], c]``
    over the non-empty neighbours (dense or sparse as :class:`OctreeConv`).

    Weight (27, C), Xavier-uniform with fan_in = fan_out = 27 * C.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(27, channels))
        bound = math.sqrt(6.0 / (2 * 27 * channels))
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor, pairs: SlotPairs) -> Tensor:
        """``x`` (N, C); ``pairs`` from the (N, 27) neighbour table -> (N, C)."""
        if not in_place_ok(x, self.weight):
            return self._plain(x, pairs)
        out = x.new_empty(x.shape)
        self.run(x, pairs, lambda a, b, y: out[a:b].copy_(y))
        return out

    def run(self, x: Tensor, pairs: SlotPairs, emit: Callable[[int, int, Tensor], object]) -> None:
        """Inference: call ``emit(a, b, y)`` with ``y`` the (b - a, C) output rows [a, b),
        over ranges covering [0, N) (see :meth:`job`)."""
        run_jobs([self.job(x, pairs, emit)])

    def job(self, x: Tensor, pairs: SlotPairs, emit: Callable[[int, int, Tensor], object]) -> Job:
        """:meth:`run` as a :class:`Job` (ranges of rows, or of sparse tiles)."""
        xp = with_zero_row(x)
        if not pairs.sparse:
            return Job(pairs.num_out, lambda a, b: emit(a, b, self._dense_rows(x, xp, pairs, a, b)))
        parts = split_parts(pairs.num_out)
        tiles = pairs.tiles(x.shape[1] * x.element_size(), x.device, parts)

        def tile_part(i: int, j: int) -> None:
            for tile in tiles[i:j]:
                emit(tile.rows.start, tile.rows.stop, self._tile(x, xp, tile))

        return Job(len(tiles), tile_part, min_rows=1 if parts > 1 else len(tiles))

    def _tile(self, x: Tensor, xp: Tensor, tile: PairTile) -> Tensor:
        """The output rows of one sparse tile, (R, C)."""
        w = self.weight
        vals = tile.gather(xp) * w.index_select(0, tile.slots)[:, None, :]
        return torch.addcmul(tile.reduce(vals), x[tile.rows], w[13])

    def _dense_rows(self, x: Tensor, xp: Tensor, pairs: SlotPairs, a: int, b: int) -> Tensor:
        """Output rows [a, b) of the dense path: a few rows in one gather of all 27 slots;
        more, per slot, accumulated in place into one reused buffer."""
        w = self.weight
        if (b - a) * x.shape[1] <= DW_GATHER_ALL:
            g = xp.index_select(0, pairs.table_t[:, a:b].reshape(-1))
            return g.view(27, b - a, x.shape[1]).mul_(w[:, None]).sum(0)
        out = x[a:b] * w[13]
        buf = torch.empty_like(out)
        cols = pairs.table_t[:, a:b].unbind(0)  # views up front, as in OctreeConv
        ws = w.unbind(0)
        for s in range(27):
            if s != 13:
                out.addcmul_(torch.index_select(xp, 0, cols[s], out=buf), ws[s])
        return out

    def _plain(self, x: Tensor, pairs: SlotPairs) -> Tensor:
        """Out-of-place (autograd, autocast)."""
        w = self.weight
        xp = with_zero_row(x)
        if pairs.sparse:
            tiles = pairs.tiles(x.shape[1] * x.element_size(), x.device)
            outs = [self._tile(x, xp, tile) for tile in tiles]
            return outs[0] if len(outs) == 1 else torch.cat(outs)
        out = x * w[13]
        for s in range(27):
            if s != 13:
                out = out.addcmul_(xp.index_select(0, pairs.table_t[s]), w[s])
        return out


class CPE(nn.Module):
    """Conditional positional encoding: LayerNorm(DWConv(x)) (used as x + CPE(x))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = OctreeDWConv(channels)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor, neighbours: SlotPairs, residual: bool = False) -> Tensor:
        """``x`` (N, C) -> LN(DWConv(x)), or ``x +`` that with ``residual``, (N, C)."""
        if not in_place_ok(x, self.conv.weight):
            y = self.norm(self.conv(x, neighbours))
            return x + y if residual else y
        out, job = self.job(x, neighbours, residual)
        run_jobs([job])
        return out

    def job(self, x: Tensor, neighbours: SlotPairs, residual: bool = False) -> tuple[Tensor, Job]:
        """Inference: the output tensor of :meth:`forward` and the :class:`Job` that fills it."""
        out = x.new_empty(x.shape)

        def emit(a: int, b: int, y: Tensor) -> None:
            if residual:
                torch.add(x[a:b], self.norm(y), out=out[a:b])
            else:
                out[a:b] = self.norm(y)

        return out, self.conv.job(x, neighbours, emit)


class RPE(nn.Module):
    """Per-axis relative position bias table (3 * (2b + 1), H), trunc-normal(0.02).

    ``bias_h(i, j) = T[dx + b, h] + T[(2b+1) + dy + b, h] + T[2(2b+1) + dz + b, h]`` with the
    offsets clamped to [-b, b]. :func:`rpe_index` turns offsets into the two lookups this
    module does (x and y combined, then z); its special codes give zero bias (relay-token
    row / column) and the key mask.
    """

    def __init__(self, num_heads: int, bound: int):
        super().__init__()
        self.bound = bound
        self.table = nn.Parameter(trunc_normal_(torch.empty(3 * (2 * bound + 1), num_heads)))
        self._cached: tuple[tuple[object, ...], tuple[Tensor, Tensor]] | None = None

    def forward(self, index: Tensor) -> Tensor:
        """``index`` (2, nw, L, L) int64 from :func:`rpe_index` or
        :func:`rpe_window_index` -> bias + mask (H, nw, L, L),
        contiguous and head-major (the layout :class:`Attention` takes).

        Code :func:`rpe_zero_code` adds 0 and :func:`rpe_mask_code` adds ``MASK_VALUE``.
        """
        return self.lookup(self.tables(), index)

    def tables(self) -> tuple[Tensor, Tensor]:
        """The two lookup tables, (H, side^2 + 2) x-y sums and (H, side + 2) z, each with
        the zero and the mask code last (build once, look up per range of windows).

        Without gradients they are kept and reused until the parameter changes (its
        version counter, storage, device or dtype); an inference-tensor parameter (made
        inside ``inference_mode``) has no version counter and gets them built afresh."""
        p = self.table
        if (torch.is_grad_enabled() and p.requires_grad) or p.is_inference():
            return self._build()  # in the graph / no version counter to check
        key = (p._version, p.data_ptr(), p.device, p.dtype, torch.is_inference_mode_enabled())
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._build())
        return self._cached[1]

    def _build(self) -> tuple[Tensor, Tensor]:
        side = 2 * self.bound + 1
        t = self.table.t().view(-1, 3, side)  # (H, axis, offset)
        heads = t.shape[0]
        extra = t.new_tensor([0.0, MASK_VALUE / 3]).expand(heads, 2)
        # (H, side * side) x-major sums, then the zero and mask codes (2 / 3 and 1 / 3 of
        # the mask in the two lookups, as three per-axis rows of MASK_VALUE / 3 did).
        xy = (t[:, 0, :, None] + t[:, 1, None, :]).reshape(heads, side * side)
        return torch.cat([xy, extra + extra], 1), torch.cat([t[:, 2], extra], 1)

    @staticmethod
    def lookup(tables: tuple[Tensor, Tensor], index: Tensor) -> Tensor:
        """:meth:`forward` with the :meth:`tables` given."""
        xy, z = tables
        _, nw, length, _ = index.shape
        bias = xy.index_select(1, index[0].reshape(-1))
        bias.add_(z.index_select(1, index[1].reshape(-1)))
        return bias.view(xy.shape[0], nw, length, length)


def rpe_index(offsets: Tensor, bound: int) -> Tensor:
    """Integer cell offsets (..., 3) -> (2, ...) int64 codes for :class:`RPE`: row 0 the
    combined x-y code ``(dx + b) (2b + 1) + dy + b``, row 1 the z code ``dz + b``, offsets
    clamped to [-b, b]. Does not modify ``offsets``."""
    side = 2 * bound + 1
    c = offsets.clamp(-bound, bound) + bound
    return torch.stack([c[..., 0] * side + c[..., 1], c[..., 2]])


def rpe_window_index(coords: Tensor, valid: Tensor, bound: int) -> Tensor:
    """The :func:`rpe_index` codes of the token pairs of each window, built per axis.

    Args:
        coords: (nw, L, 3) integer cell coordinates of each window's tokens (any value at
            padding slots).
        valid: (nw, L) bool, False at padding slots.
        bound: the RPE clamp b.

    Returns:
        (2, nw, L, L) int64 (int32 indices make the lookups slower), equal to
        ``rpe_index(offsets, bound)`` for the offsets
        ``coords[w, i] - coords[w, j]``, 0 where token i or j is padding (as
        :func:`~hotformerloc.octree.relative_offsets` gives them), computed on one
        (nw, L, L) int32 tensor per axis instead of the (nw, L, L, 3) int64 offsets.
    """
    side = 2 * bound + 1
    c = coords.to(torch.int32)

    def axis(k: int) -> Tensor:  # clamped offset + b, in [0, 2b]
        return (c[:, :, None, k] - c[:, None, :, k]).clamp_(-bound, bound).add_(bound)

    index = torch.stack([axis(0).mul_(side).add_(axis(1)), axis(2)])
    padding = ~(valid[:, :, None] & valid[:, None, :])
    return fill_codes_(index, padding, (bound * side + bound, bound)).long()


def rpe_zero_code(bound: int) -> tuple[int, int]:
    """The (x-y, z) codes of :func:`rpe_index` that add 0 (see :meth:`RPE.forward`)."""
    side = 2 * bound + 1
    return side * side, side


def rpe_mask_code(bound: int) -> tuple[int, int]:
    """The (x-y, z) codes of :func:`rpe_index` that add :data:`MASK_VALUE`."""
    side = 2 * bound + 1
    return side * side + 1, side + 1


def fill_codes_(index: Tensor, where: Tensor, codes: tuple[int, int]) -> Tensor:
    """Set ``index`` (2, ...) to ``codes`` where the bool ``where`` (broadcastable to
    ``index[0]``) holds, in place."""
    index[0].masked_fill_(where, codes[0])
    index[1].masked_fill_(where, codes[1])
    return index


@dataclass(frozen=True)
class AttentionLayout:
    """Plan to run attention over groups of tokens ("windows") of a flat token array.

    ``T`` tokens (rows of a (T, C) tensor) are arranged in ``nw`` groups of ``L`` slots:

    * ``index``: (nw, L) int64 token per slot; padding slots hold token 0 (any valid row:
      they are masked as keys and their query outputs are dropped);
    * ``valid``: (nw, L) bool, False at padding slots;
    * ``inverse``: (T,) int64 flat slot (in ``nw * L``) of every token; each token sits in
      exactly one slot.
    """

    index: Tensor
    valid: Tensor
    inverse: Tensor
    _parts: dict[tuple[int, int], tuple[Tensor, Tensor]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def part_rows(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Groups [start, stop): (flat slots of their valid slots, counted from group
        ``start``, and the tokens in them), cached."""
        key = (start, stop)
        if key not in self._parts:
            slots = self.valid[start:stop].reshape(-1).nonzero().view(-1)
            self._parts[key] = (slots, self.index[start:stop].reshape(-1)[slots])
        return self._parts[key]

    @staticmethod
    def from_index(index: Tensor, num_tokens: int) -> AttentionLayout:
        """Build from an (nw, L) index with -1 padding covering each of ``num_tokens`` once."""
        valid = index >= 0
        flat = index.reshape(-1)
        slots = torch.arange(flat.numel(), device=index.device)
        keep = flat >= 0
        inverse = torch.empty(num_tokens, dtype=torch.long, device=index.device)
        inverse[flat[keep]] = slots[keep]
        return AttentionLayout(index.clamp(min=0).contiguous(), valid, inverse)

    @staticmethod
    def group_by(group: Tensor, num_groups: int) -> AttentionLayout:
        """One group per id in [0, num_groups) of the (T,) int64 ``group`` tensor (T >= 1).

        Tokens keep their relative order inside a group; groups are padded to the largest.
        """
        order = torch.argsort(group, stable=True)
        counts = torch.bincount(group, minlength=num_groups)
        start = torch.cumsum(counts, 0) - counts
        rank = torch.arange(group.numel(), device=group.device) - start[group[order]]
        index = torch.full(
            (num_groups, int(counts.max())), -1, dtype=torch.long, device=group.device
        )
        index[group[order], rank] = order
        return AttentionLayout.from_index(index, group.numel())

    def key_mask(self, dtype: torch.dtype) -> Tensor:
        """(nw, 1, 1, L) additive mask: 0 at valid keys, :data:`MASK_VALUE` at padding."""
        mask = torch.zeros(self.valid.shape, dtype=dtype, device=self.valid.device)
        return mask.masked_fill_(~self.valid, MASK_VALUE)[:, None, None, :]

    def gather(self, x: Tensor) -> Tensor:
        """Token rows (T, ...) -> group slots (nw, L, ...)."""
        return x.index_select(0, self.index.reshape(-1)).view(*self.index.shape, *x.shape[1:])

    def scatter(self, y: Tensor) -> Tensor:
        """Group slots (nw, L, ...) -> token rows (T, ...), padding slots dropped."""
        return y.reshape(-1, *y.shape[2:]).index_select(0, self.inverse)


class Attention(nn.Module):
    """Multi-head self-attention inside the groups of an :class:`AttentionLayout`.

    ``softmax(q k^T / sqrt(C/H) + mask) v`` per group, with q, k, v = Linear(C, 3C) and an
    output Linear(C, C) (both with bias), computed with
    :func:`torch.nn.functional.scaled_dot_product_attention` over a head-major batch
    (H, nw), so that an RPE bias is used as it is built, without a transposing copy.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, layout: AttentionLayout, mask: Tensor | None = None) -> Tensor:
        """``x`` (T, C) tokens -> (T, C).

        ``mask``: additive float mask broadcastable to (H, nw, L, L), head-major (e.g. the
        RPE bias with the key mask folded in, see :class:`RPE`); default: the layout's key
        mask.
        """
        nw, length = layout.index.shape
        if mask is None:
            mask = layout.key_mask(x.dtype).view(1, nw, 1, length)
        out = self.heads(layout.gather(x), mask)
        out = layout.scatter(out)
        with matmul_threads():
            return self.proj(out)

    def heads(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Grouped tokens (nw, L, C) and their mask -> (nw, L, C) attention output, before
        the output projection."""
        nw, length, c = tokens.shape
        h = self.num_heads
        with matmul_threads():
            qkv = self.qkv(tokens)  # (nw, L, 3C)
            q, k, v = qkv.view(nw, length, 3, h, c // h).permute(2, 3, 0, 1, 4).unbind(0)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (H, nw, L, C/H)
        return out.permute(1, 2, 0, 3).reshape(nw, length, c)


class MLP(nn.Module):
    """Linear(C, hidden) -> GELU -> Linear(hidden, C)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        with matmul_threads():
            return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Per-sample stochastic depth: one Bernoulli(1 - rate) draw per sample, shared by all
    of its tokens; kept branches are scaled by 1 / (1 - rate). Identity in eval mode."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor, batch_id: Tensor, batch_size: int) -> Tensor:
        """``x`` (T, C) branch output, ``batch_id`` (T,) sample of each token."""
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        scale = torch.rand(batch_size, dtype=x.dtype, device=x.device).lt_(keep).div_(keep)
        return x * scale[batch_id, None]

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"
