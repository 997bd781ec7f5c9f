"""Octree construction: Morton keys, node levels, children/parent and 27-neighbour tables.

Semantics (spec 1.3, ocnn's ``nempty=True``): a point ``p`` in [-1, 1]^3 falls in the depth-d
cell ``trunc((p + 1) * 2^(d-1))`` per axis, computed in the input's dtype. A coordinate at the
unit edge (``p = +1``, or any ``p`` with ``p + 1`` rounding to 2, e.g. ``1 - 2^-24`` in float32)
gives the overflowing value ``2^d``, handled by ``build_octree(..., unit_edge=...)``:

* ``"clamp"`` (default): the cell is clamped to the last one, ``2^d - 1``;
* ``"wrap"``: ocnn's behaviour, bit for bit. ocnn keeps only ``d`` bits per axis in the key,
  so ``2^d`` wraps to cell 0 of that axis (the opposite face of the cube). The leaf's mean
  point is still the mean of the points *as given* (ocnn averages the points, not their
  cells), so a leaf in cell 0 can have a mean point far outside its cell (e.g. ``x = +1``).

Only non-empty nodes exist at every depth, including depths < ``full_depth``; ``full_depth``
is carried as metadata only (see :func:`build_octree`).

Everything is vectorised tensor code (no loop over points or nodes; small loops over depths)
and runs unchanged on CPU and CUDA.

Implementation notes:

* Internally a node of depth ``d`` in sample ``b`` has the combined key
  ``(b << 3d) | key``: the batch index sits right above the key bits, so one sort orders
  nodes by (sample, z-order) and the parent's combined key is simply ``combined >> 3``.
  Parents are therefore found with a run-length pass over already sorted keys (no sort
  per depth).
* Neighbour tables are built top-down from the parent level instead of by key search: the
  neighbour of a node at displacement ``delta`` is a child of one of its parent's 27
  neighbours, which one and which child slot being fixed by the node's own child slot
  (its low 3 key bits) and ``delta``. That is two table gathers per depth, and it stays
  within one sample because depth 0 has one root per sample and no other neighbour.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor

from .normalise import OctreeInputError, check_cloud_shape
from .octree import Octree

MAX_DEPTH = 16
"""Deepest supported octree (keys use 3 bits per depth; the batch index sits above them)."""

UNIT_EDGES = ("clamp", "wrap")
"""Accepted values of ``build_octree(..., unit_edge=...)``."""

MAX_MORTON_DEPTH = 21
"""Deepest depth :func:`morton_encode` / :func:`morton_decode` accept (63 key bits)."""

# Bit compaction (decode): steps (shift, mask) that move bit 3i of a key to bit i. The step
# with shift s only matters when the coordinate has more than s/2 bits, so shallow depths
# skip the last steps.
_COMPACT = (
    (2, 0x10C30C30C30C30C3),
    (4, 0x100F00F00F00F00F),
    (8, 0x1F0000FF0000FF),
    (16, 0x1F00000000FFFF),
    (32, 0x1FFFFF),
)
_EVERY_THIRD_BIT = 0x1249249249249249


def _compact_bits(v: Tensor, bits: int) -> Tensor:
    """Gather bits 0, 3, 6... of ``v`` (int64) into bits 0, 1, 2... (``bits`` of them)."""
    v = v & _EVERY_THIRD_BIT
    for shift, mask in _COMPACT:
        if bits > shift // 2:
            v = (v | (v >> shift)) & mask
    return v


def _encode(cells: Tensor, depth: int) -> Tensor:
    """Keys of (N, 3) int64 cells in ``[0, 2**depth)``: one table lookup per 8 bits of depth.

    (Several times faster on CPU than shift-and-mask spreading.)
    """
    table, offsets = _constants(cells.device)[2:]
    key = cells.new_zeros(cells.shape[0])
    for low in range(0, depth, 8):
        byte = cells if depth <= 8 else (cells >> low) & 255
        part = table.index_select(0, (byte + offsets).view(-1)).view(-1, 3)
        key |= (part[:, 0] | part[:, 1] | part[:, 2]) << (3 * low)
    return key


def _check_morton_depth(depth: int, name: str) -> None:
    if not isinstance(depth, int) or not 0 <= depth <= MAX_MORTON_DEPTH:
        raise OctreeInputError(
            name, f"depth must be an int in [0, {MAX_MORTON_DEPTH}], got {depth}"
        )


def morton_encode(xyz_int: Tensor, depth: int) -> Tensor:
    """Morton (z-order, "shuffled") keys of integer cell coordinates.

    Key bit ``3i+2`` = x bit i, ``3i+1`` = y bit i, ``3i`` = z bit i (x most significant
    inside each 3-bit group), e.g. ``(1, 0, 0)`` at depth 1 has key 4.

    Args:
        xyz_int: (N, 3) int64 coordinates in ``[0, 2**depth)`` (not checked: higher bits
            leak into other axes).
        depth: in ``[0, 21]``.

    Returns:
        (N,) int64 keys in ``[0, 8**depth)``, same device.
    """
    _check_morton_depth(depth, "morton_encode depth")
    if xyz_int.ndim != 2 or xyz_int.shape[1] != 3 or xyz_int.dtype != torch.int64:
        raise OctreeInputError(
            "morton_encode xyz_int",
            f"expected int64 of shape (N, 3), got {xyz_int.dtype} {tuple(xyz_int.shape)}",
        )
    return _encode(xyz_int, depth)


def morton_decode(keys: Tensor, depth: int) -> Tensor:
    """Integer cell coordinates of Morton keys (inverse of :func:`morton_encode`).

    Args:
        keys: (N,) int64 keys; bits at and above ``3 * depth`` are ignored.
        depth: in ``[0, 21]``.

    Returns:
        (N, 3) int64 ``(x, y, z)`` in ``[0, 2**depth)``, same device.
    """
    _check_morton_depth(depth, "morton_decode depth")
    if keys.ndim != 1 or keys.dtype != torch.int64:
        raise OctreeInputError(
            "morton_decode keys",
            f"expected int64 of shape (N,), got {keys.dtype} {tuple(keys.shape)}",
        )
    if depth == 0:
        return keys.new_zeros(keys.shape[0], 3)
    keys = keys & ((1 << (3 * depth)) - 1)
    return torch.stack([_compact_bits(keys >> s, depth) for s in (2, 1, 0)], 1)


def _neighbour_luts() -> tuple[Tensor, Tensor]:
    """(8, 27) int64 tables indexed by (child slot, neighbour slot).

    For a node whose low key bits are ``c`` and a displacement slot ``s``, the neighbour is
    child ``CHILD[c, s] - 8`` of the parent's neighbour in slot ``PARENT[c, s]``. (The +8
    skips the 8 sentinels in front of the flattened children table, see
    :func:`_child_neighbours`.)
    """
    parent = torch.empty(8, 27, dtype=torch.int64)
    child = torch.empty(8, 27, dtype=torch.int64)
    for c in range(8):
        own = ((c >> 2) & 1, (c >> 1) & 1, c & 1)
        for s in range(27):
            t = [own[0] + s // 9 - 1, own[1] + (s // 3) % 3 - 1, own[2] + s % 3 - 1]
            p = [v >> 1 for v in t]  # floor division by 2: -1 -> -1, 0..1 -> 0, 2 -> 1
            parent[c, s] = (p[0] + 1) * 9 + (p[1] + 1) * 3 + (p[2] + 1)
            child[c, s] = 8 + 4 * (t[0] & 1) + 2 * (t[1] & 1) + (t[2] & 1)
    return parent, child


_PARENT_SLOT, _CHILD_SLOT = _neighbour_luts()
# Bit i of a byte moved to bit 3i, pre-shifted for x, y and z, looked up at
# cell + (0, 256, 512).
_BYTE_SPREAD = torch.tensor([sum(((v >> i) & 1) << (3 * i) for i in range(8)) for v in range(256)])
_AXIS_TABLE = torch.cat([_BYTE_SPREAD << 2, _BYTE_SPREAD << 1, _BYTE_SPREAD])
_AXIS_OFFSETS = torch.tensor([0, 256, 512])
_CONSTANTS: dict[torch.device, tuple[Tensor, ...]] = {}


def _constants(device: torch.device) -> tuple[Tensor, ...]:
    """The lookup tables above on ``device`` (copied once per device)."""
    consts = _CONSTANTS.get(device)
    if consts is None:
        consts = tuple(
            t.to(device) for t in (_PARENT_SLOT, _CHILD_SLOT, _AXIS_TABLE, _AXIS_OFFSETS)
        )
        _CONSTANTS[device] = consts
    return consts


def _root_neighbours(batch_size: int, device: torch.device) -> Tensor:
    table = torch.full((batch_size, 27), -1, dtype=torch.int64, device=device)
    table[:, 13] = torch.arange(batch_size, device=device)
    return table


def _child_neighbours(octree: Octree, d: int, above: Tensor) -> Tensor:
    """Depth-``d`` neighbour table from the depth ``d-1`` one (``above``).

    Uses ``index_select`` on flattened tables (several times faster than advanced indexing
    or ``take`` on CPU) and only two (N_d, 27) buffers: fresh memory is costly on CPU (page
    faults).
    """
    parent_slot, child_slot = _constants(octree.device)[:2]
    own = octree.keys[d] & 7
    # Flat index of the parent's neighbour in `above`, then that neighbour's index.
    flat = parent_slot.index_select(0, own).add_((octree.parent[d] * 27).unsqueeze(1))
    pn = above.view(-1).index_select(0, flat.view(-1))
    # Children table behind 8 sentinels (-1): a missing neighbour (pn = -1) lands on them.
    children = torch.cat([pn.new_full((8,), -1), octree.children[d - 1].view(-1)])
    flat = torch.index_select(child_slot, 0, own, out=flat).view(-1).add_(pn.mul_(8))
    return torch.index_select(children, 0, flat, out=pn).view(-1, 27)


def _requested_depths(neighbours: bool | Iterable[int], depth: int) -> list[int]:
    if neighbours is True:
        return list(range(depth + 1))
    if neighbours is False:
        return []
    wanted = sorted(set(neighbours))
    bad = [d for d in wanted if not (isinstance(d, int) and 0 <= d <= depth)]
    if bad:
        raise OctreeInputError("neighbours", f"depths {bad} outside [0, {depth}]")
    return wanted


def compute_neighbours(octree: Octree, depths: bool | Iterable[int] = True) -> Octree:
    """Fill ``octree.neighbours[d]`` for the requested depths (in place; returns ``octree``).

    Tables already present are kept and reused. Depths above the deepest requested one are
    computed on the way (the tables are built top-down) but only the requested ones are
    stored.

    Args:
        octree: built by :func:`build_octree` (needs ``children`` and ``parent``).
        depths: ``True`` = every depth ``0..octree.depth``; ``False`` = none; or an iterable
            of depths in ``[0, octree.depth]``.

    Returns:
        ``octree``, whose ``neighbours[d]`` is a (N_d, 27) int64 table for each requested
        ``d`` (layout in :class:`~hotformerloc.octree.octree.Octree`).
    """
    wanted = _requested_depths(depths, octree.depth)
    if not wanted:
        return octree
    previous: Tensor | None = None
    for d in range(wanted[-1] + 1):
        table = octree.neighbours.get(d)
        if table is None:
            if previous is None:
                table = _root_neighbours(octree.batch_size, octree.device)
            else:
                table = _child_neighbours(octree, d, previous)
            if d in wanted:
                octree.neighbours[d] = table
        previous = table
    return octree


def _as_samples(points: Tensor | Sequence[Tensor]) -> list[tuple[Tensor, str]]:
    if isinstance(points, Tensor):
        return [(check_cloud_shape(points, "build_octree points"), "build_octree points")]
    if not isinstance(points, Sequence) or isinstance(points, (str, bytes)):
        raise OctreeInputError(
            "build_octree points",
            f"expected a tensor or a list of tensors, got {type(points).__name__}",
        )
    if len(points) == 0:
        raise OctreeInputError("build_octree points", "empty batch (no samples)")
    names = [f"build_octree points[{i}]" for i in range(len(points))]
    return [(check_cloud_shape(p, n), n) for p, n in zip(points, names, strict=True)]


def _check_range(xyz: Tensor, samples: list[tuple[Tensor, str]]) -> None:
    """One device sync on valid input; names the first bad sample otherwise."""
    worst = xyz.abs().amax()
    if bool(worst <= 1.0):  # False for NaN as well
        return
    for p, name in samples:
        bad = int((~torch.isfinite(p)).sum())
        if bad:
            raise OctreeInputError(name, f"{bad} non-finite coordinates (NaN or inf)")
        outside = int((p.abs() > 1.0).any(1).sum())
        if outside:
            raise OctreeInputError(
                name,
                f"{outside} points outside [-1, 1]^3 (max |coordinate| "
                f"{float(p.abs().amax()):.6g}); normalise, then filter_to_unit or clamp_to_unit",
            )


def _first_of_runs(sorted_keys: Tensor) -> Tensor:
    """(N,) bool: True where a run of equal values starts."""
    first = torch.empty_like(sorted_keys, dtype=torch.bool)
    first[:1] = True
    torch.ne(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    return first


def build_octree(
    points: Tensor | Sequence[Tensor],
    depth: int,
    full_depth: int = 2,
    neighbours: bool | Iterable[int] = True,
    device: torch.device | str | None = None,
    unit_edge: Literal["clamp", "wrap"] = "clamp",
) -> Octree:
    """Build the batched non-empty octree of one or more normalised clouds.

    Args:
        points: one (N, 3) tensor (batch of 1) or a sequence of B tensors (N_b, 3), float32 or
            float64, every coordinate in [-1, 1] (normalised, see
            :mod:`hotformerloc.octree.normalise`). Cells are computed in the input's dtype
            (ocnn computes in float32).
        depth: leaf depth in ``[1, 16]``; the grid has ``2**depth`` cells per axis.
        full_depth: >= 0; stored (as ``min(full_depth, depth)``) as metadata only. Our
            octree keeps only the non-empty nodes at *every* depth. ocnn's non-empty nodes
            equal ours at every depth ``>= full_depth``, while its depths ``< full_depth`` are
            dense (all ``8**d`` nodes, empty ones included), so features or indices at those
            depths are not interchangeable with ocnn's.
        neighbours: depths whose 27-neighbour tables to build: ``True`` = all of
            ``0..depth``, ``False`` = none (see :func:`compute_neighbours`), or an iterable.
        device: where the octree lives; default: the device of the input tensors (which must
            then all be on one device).
        unit_edge: cell of a coordinate at the unit edge (``(p + 1) * 2^(d-1)`` equal to
            ``2^d``, i.e. ``p = +1``): ``"clamp"`` puts it in the last cell ``2^d - 1``;
            ``"wrap"`` reproduces ocnn exactly, wrapping it to cell 0 of that axis (the key
            keeps ``d`` bits per axis). Either way the leaf mean point averages the points
            as given, so with ``"wrap"`` it may lie outside its leaf's cell (as in ocnn).

    Returns:
        An :class:`Octree` with ``keys``, ``batch_id``, ``counts`` for depths ``0..depth``,
        ``points`` (leaf mean points, float32, in [-1, 1]), ``children[d]`` for
        ``d < depth``, ``parent[d]`` for ``d >= 1`` and the requested ``neighbours``.
        A cloud whose points all fall in one leaf gives a chain of single nodes (one per
        depth).

    Raises:
        OctreeInputError: no samples, a sample that is not a (N, 3) float32/float64 tensor,
            empty, non-finite or outside [-1, 1] (the message names the sample index), a bad
            ``depth``/``full_depth``/``neighbours``/``unit_edge``, or tensors on different
            devices.
    """
    if not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise OctreeInputError(
            "build_octree depth", f"must be an int in [1, {MAX_DEPTH}], got {depth}"
        )
    if not isinstance(full_depth, int) or full_depth < 0:
        raise OctreeInputError("build_octree full_depth", f"must be an int >= 0, got {full_depth}")
    if unit_edge not in UNIT_EDGES:
        raise OctreeInputError(
            "build_octree unit_edge", f"must be one of {UNIT_EDGES}, got {unit_edge!r}"
        )
    samples = _as_samples(points)
    wanted = _requested_depths(neighbours, depth)
    batch_size = len(samples)
    if 3 * depth + (batch_size - 1).bit_length() > 62:
        raise OctreeInputError(
            "build_octree points", f"batch of {batch_size} samples is too large for depth {depth}"
        )
    if device is None:
        devices = {p.device for p, _ in samples}
        if len(devices) > 1:
            raise OctreeInputError(
                "build_octree points", f"samples on different devices {sorted(map(str, devices))}"
            )
        dev = samples[0][0].device
    else:
        dev = torch.device(device)
    tensors = [p.to(dev) for p, _ in samples]
    xyz = torch.cat(tensors) if batch_size > 1 else tensors[0]
    _check_range(xyz, samples)

    # Leaves: cells, combined (sample, key) sort, run-length merge and mean points.
    # Cells are >= 0 (range check) and <= 2**depth, the unit edge.
    cells = ((xyz + 1.0) * float(2 ** (depth - 1))).to(torch.int64)
    if unit_edge == "wrap":
        cells.bitwise_and_(2**depth - 1)  # ocnn: d bits per axis, 2**depth -> 0
    else:
        cells.clamp_max_(2**depth - 1)
    combined = _encode(cells, depth)
    if batch_size > 1:
        sizes = torch.tensor([p.shape[0] for p in tensors], device=dev)
        sample = torch.repeat_interleave(
            torch.arange(batch_size, device=dev), sizes, output_size=xyz.shape[0]
        )
        combined |= sample << (3 * depth)
    combined, order = torch.sort(combined)
    first = _first_of_runs(combined)
    leaf = torch.cumsum(first, 0).sub_(1)
    starts = first.nonzero().squeeze(1)
    combined = combined.index_select(0, starts)
    n_leaves = combined.shape[0]
    hits = torch.diff(starts, append=starts.new_full((1,), xyz.shape[0]))
    sums = xyz.new_zeros(n_leaves, 3).index_add_(0, leaf, xyz.index_select(0, order))
    leaf_points = (sums / hits.unsqueeze(1)).to(torch.float32)

    # Levels, bottom-up: parents are runs of equal (combined >> 3) in the sorted keys.
    levels = [combined]
    parent: dict[int, Tensor] = {}
    children: dict[int, Tensor] = {}
    for d in range(depth, 0, -1):
        up = levels[-1] >> 3
        first = _first_of_runs(up)
        index = torch.cumsum(first, 0).sub_(1)
        coarse = up[first]
        table = torch.full((coarse.shape[0] * 8,), -1, dtype=torch.int64, device=dev)
        table[index * 8 + (levels[-1] & 7)] = torch.arange(index.shape[0], device=dev)
        parent[d] = index
        children[d - 1] = table.view(-1, 8)
        levels.append(coarse)
    levels.reverse()

    keys, batch_id, counts = [], [], []
    bounds = torch.arange(batch_size + 1, device=dev)
    for d, level in enumerate(levels):
        if batch_size == 1:
            keys.append(level)
            batch_id.append(torch.zeros_like(level))
            counts.append(level.new_full((1,), level.shape[0]))
        else:
            keys.append(level & ((1 << (3 * d)) - 1))
            batch_id.append(level >> (3 * d))
            counts.append(torch.diff(torch.searchsorted(level, bounds << (3 * d))))

    octree = Octree(
        depth=depth,
        full_depth=min(full_depth, depth),
        batch_size=batch_size,
        keys=keys,
        batch_id=batch_id,
        counts=counts,
        points=leaf_points,
        children=children,
        parent=parent,
    )
    return compute_neighbours(octree, wanted)
