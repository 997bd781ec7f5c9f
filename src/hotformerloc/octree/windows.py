"""Window partition of the z-ordered nodes of one depth (spec 1.4) and window geometry.

Deviation from the reference (spec 1.4, last paragraph; checklist item 2): the reference pads
the whole batch's node sequence once to a multiple of ``K * D``, so one window per sample can
hold the tail of a sample and the head of the next ("leaky" windows, handled by masks and a
left-most-sample rule for relay tokens). Here **each sample is padded separately** to a
multiple of ``K * D``: no window ever mixes two samples, and padding tokens (index -1) are
the only ones to mask. Per sample the layout is the reference's: non-dilated windows are
consecutive chunks of K nodes in z-order; dilated windows (``D > 1``) take, inside each block
of ``K * D`` consecutive padded positions, every D-th position (window ``j`` of a block holds
positions ``j, j + D, j + 2D, ...``), i.e. ``reshape(-1, K, D).transpose(1, 2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .normalise import OctreeInputError
from .octree import Octree


@dataclass
class Windows:
    """Windows of K tokens over the depth-``depth`` nodes of an octree.

    Fields (``nw`` = number of windows over the batch, ``N`` = nodes at that depth):

    * ``index``: (nw, K) int64 node index in ``[0, N)``, -1 for padding;
    * ``valid``: (nw, K) bool, ``index >= 0``;
    * ``batch``: (nw,) int64 sample of each window, non-decreasing;
    * ``num_windows_per_sample``: (B,) int64, ``ceil(counts[b] / (K * D)) * D``;
    * ``first_window``: (B,) int64, sample b owns windows
      ``first_window[b] : first_window[b] + num_windows_per_sample[b]``;
    * ``slot``: (N,) int64, the flat position ``w * K + k`` of each node in ``index``
      (``index.view(-1)[slot] == arange(N)``).
    """

    depth: int
    patch_size: int
    dilation: int
    index: Tensor
    valid: Tensor
    batch: Tensor
    num_windows_per_sample: Tensor
    first_window: Tensor
    slot: Tensor

    @property
    def num_windows(self) -> int:
        return int(self.index.shape[0])

    @property
    def num_nodes(self) -> int:
        return int(self.slot.shape[0])

    def gather(self, x: Tensor) -> Tensor:
        """Node features (N, ...) -> window tokens (nw, K, ...), zeros at padding.

        Differentiable; exact inverse of :meth:`scatter` on valid tokens.
        """
        if x.shape[0] != self.num_nodes:
            raise ValueError(f"gather: expected {self.num_nodes} rows, got {x.shape[0]}")
        flat = x.new_zeros((self.num_windows * self.patch_size, *x.shape[1:]))
        return flat.index_copy(0, self.slot, x).view(
            self.num_windows, self.patch_size, *x.shape[1:]
        )

    def scatter(self, y: Tensor) -> Tensor:
        """Window tokens (nw, K, ...) -> node features (N, ...), padding dropped.

        Differentiable; exact inverse of :meth:`gather`.
        """
        if tuple(y.shape[:2]) != (self.num_windows, self.patch_size):
            raise ValueError(
                f"scatter: expected leading shape {(self.num_windows, self.patch_size)}, "
                f"got {tuple(y.shape[:2])}"
            )
        return y.reshape(-1, *y.shape[2:]).index_select(0, self.slot)


def window_partition(octree: Octree, depth: int, patch_size: int, dilation: int = 1) -> Windows:
    """Cut the depth-``depth`` nodes into windows of ``patch_size`` tokens, per sample.

    Each sample's z-ordered nodes are padded (index -1) to a multiple of
    ``patch_size * dilation`` (module doc for the layout and the deviation from the
    reference). Vectorised; one device sync (the total window count).

    Args:
        octree: any octree with ``keys``/``counts`` at ``depth``.
        depth: in ``[0, octree.depth]``.
        patch_size: K >= 1 tokens per window.
        dilation: D >= 1; D > 1 gives dilated windows.

    Returns:
        A :class:`Windows` on the octree's device.
    """
    if not 0 <= depth <= octree.depth:
        raise OctreeInputError(
            "window_partition depth", f"must be in [0, {octree.depth}], got {depth}"
        )
    if patch_size < 1 or dilation < 1:
        raise OctreeInputError(
            "window_partition",
            f"patch_size and dilation must be >= 1, got {patch_size}, {dilation}",
        )
    k, dil = patch_size, dilation
    block = k * dil
    counts = octree.counts[depth]
    batch_id = octree.batch_id[depth]
    dev = counts.device
    padded = (counts + block - 1) // block * block
    start = torch.cumsum(padded, 0) - padded
    node_start = torch.cumsum(counts, 0) - counts
    total = int(padded.sum())
    n = batch_id.shape[0]
    pos = torch.arange(n, device=dev) + (start - node_start)[batch_id]  # padded position
    sequence = torch.full((total,), -1, dtype=torch.int64, device=dev)
    sequence[pos] = torch.arange(n, device=dev)
    if dil == 1:
        index = sequence.view(-1, k)
        slot = pos
    else:
        index = sequence.view(-1, k, dil).transpose(1, 2).reshape(-1, k)
        blk, rest = pos // block, pos % block
        slot = (blk * dil + rest % dil) * k + rest // dil
    per_sample = padded // k
    return Windows(
        depth=depth,
        patch_size=k,
        dilation=dil,
        index=index,
        valid=index >= 0,
        batch=torch.repeat_interleave(
            torch.arange(counts.shape[0], device=dev), per_sample, output_size=total // k
        ),
        num_windows_per_sample=per_sample,
        first_window=torch.cumsum(per_sample, 0) - per_sample,
        slot=slot,
    )


def relative_offsets(octree: Octree, depth: int, windows: Windows) -> Tensor:
    """Integer cell-coordinate differences of the tokens of each window (RPE input, spec 2.3).

    Args:
        octree: the octree the windows were cut from.
        depth: the windows' depth.
        windows: from :func:`window_partition` at ``depth``.

    Returns:
        (nw, K, K, 3) int64: ``out[w, i, j] = coords(i) - coords(j)`` (x, y, z), each in
        ``[-(2**depth - 1), 2**depth - 1]``; 0 where token i or j is padding. Dilated windows
        use their own (dilated) grouping.
    """
    if windows.depth != depth:
        raise OctreeInputError(
            "relative_offsets depth", f"windows were cut at depth {windows.depth}, not {depth}"
        )
    valid = windows.valid.unsqueeze(-1)
    c = octree.coords(depth)[windows.index.clamp(min=0)] * valid
    pair = valid.unsqueeze(2) & valid.unsqueeze(1)
    return (c.unsqueeze(2) - c.unsqueeze(1)) * pair


def node_corner_coords(octree: Octree, depth: int) -> Tensor:
    """Lower-corner coordinates of the depth-``depth`` nodes in the [-1, 1] frame (ADaPE).

    Returns:
        (N_d, 3) float32 ``c * 2**(1 - depth) - 1`` for integer cell coordinates ``c``, in
        ``[-1, 1)``.
    """
    if not 0 <= depth <= octree.depth:
        raise OctreeInputError(
            "node_corner_coords depth", f"must be in [0, {octree.depth}], got {depth}"
        )
    return octree.coords(depth).to(torch.float32).mul_(2.0 ** (1 - depth)).sub_(1.0)
