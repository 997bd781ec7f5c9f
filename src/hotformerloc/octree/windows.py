"""Window partition of the z-ordered nodes of one depth (spec 1.4) and window geometry.

Two batching modes (``ModelConfig.window_batching``):

* ``per_sample`` (default; a deviation from the reference, spec 1.4 last paragraph):
  **each sample is padded separately** to a multiple of ``K * D``. No window ever mixes two
  samples, padding tokens (index -1) are the only ones to mask, and a sample's windows (so
  its descriptor) do not depend on the rest of the batch (they equal the reference's
  batch-1 windows).
* ``reference``: the reference's layout. The batch's concatenated node sequence is padded
  **once** to a multiple of ``K * D`` (``D`` = ``pad_dilation``, the model's dilation, also
  for the non-dilated windows), so a window can hold the tail of one sample and the head of
  the next ("leaky" windows) and there are ``ceil(T / (K * D)) * D`` windows over the
  batch. Attention is then masked between tokens of different samples (padding counts as
  sample B) and a window's relay token belongs to its left-most (minimum) sample.

In both modes the layout inside a padded sequence is the reference's: non-dilated windows
are consecutive chunks of K nodes in z-order; dilated windows (``D > 1``) take, inside each
block of ``K * D`` consecutive padded positions, every D-th position (window ``j`` of a block
holds positions ``j, j + D, j + 2D, ...``), i.e. ``reshape(-1, K, D).transpose(1, 2)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .normalise import OctreeInputError
from .octree import Octree

WindowBatching = Literal["per_sample", "reference"]


@dataclass
class Windows:
    """Windows of K tokens over the depth-``depth`` nodes of an octree.

    Fields (``nw`` = number of windows over the batch, ``N`` = nodes at that depth, ``B`` =
    batch size):

    * ``batching``: ``per_sample`` or ``reference`` (module doc);
    * ``index``: (nw, K) int64 node index in ``[0, N)``, -1 for padding;
    * ``valid``: (nw, K) bool, ``index >= 0``;
    * ``sample``: (nw, K) int64 sample of each token, ``B`` at padding (the reference's
      per-token batch index; attention is masked where two tokens' samples differ);
    * ``batch``: (nw,) int64 sample owning each window, non-decreasing: the minimum of its
      tokens' ``sample`` (the left-most sample of a leaky window; ``B`` for a window of
      padding only, which exists in ``reference`` mode only);
    * ``num_windows_per_sample``: (B,) int64 windows owned by each sample
      (``per_sample``: ``ceil(counts[b] / (K * D)) * D``);
    * ``first_window``: (B,) int64, sample b owns windows
      ``first_window[b] : first_window[b] + num_windows_per_sample[b]``;
    * ``slot``: (N,) int64, the flat position ``w * K + k`` of each node in ``index``
      (``index.view(-1)[slot] == arange(N)``).

    Windows owned by a sample always come first: ``num_owned`` of them, then (``reference``
    mode only) the windows of padding only.
    """

    depth: int
    patch_size: int
    dilation: int
    batching: WindowBatching
    index: Tensor
    valid: Tensor
    sample: Tensor
    batch: Tensor
    num_windows_per_sample: Tensor
    first_window: Tensor
    slot: Tensor
    num_owned: int

    @property
    def num_windows(self) -> int:
        return int(self.index.shape[0])

    @property
    def batch_size(self) -> int:
        return int(self.num_windows_per_sample.shape[0])

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


def window_partition(
    octree: Octree,
    depth: int,
    patch_size: int,
    dilation: int = 1,
    *,
    batching: WindowBatching = "per_sample",
    pad_dilation: int = 1,
) -> Windows:
    """Cut the depth-``depth`` nodes into windows of ``patch_size`` tokens.

    ``per_sample``: each sample's z-ordered nodes are padded (index -1) to a multiple of
    ``patch_size * dilation``. ``reference``: the batch's concatenated nodes are padded once
    to a multiple of ``patch_size * max(dilation, pad_dilation)`` (module doc for both
    layouts). Vectorised; one device sync (``per_sample``: the total window count;
    ``reference``: the owned window count).

    Args:
        octree: any octree with ``keys``/``counts`` at ``depth``.
        depth: in ``[0, octree.depth]``.
        patch_size: K >= 1 tokens per window.
        dilation: D >= 1; D > 1 gives dilated windows.
        batching: ``per_sample`` or ``reference``.
        pad_dilation: ``reference`` only: the sequence is padded to a multiple of
            ``K * max(dilation, pad_dilation)`` (the reference pads every depth for its
            dilated windows, also where the windows are not dilated).

    Returns:
        A :class:`Windows` on the octree's device.
    """
    if not 0 <= depth <= octree.depth:
        raise OctreeInputError(
            "window_partition depth", f"must be in [0, {octree.depth}], got {depth}"
        )
    if patch_size < 1 or dilation < 1 or pad_dilation < 1:
        raise OctreeInputError(
            "window_partition",
            "patch_size and dilation (and pad_dilation) must be >= 1, got "
            f"{patch_size}, {dilation} ({pad_dilation})",
        )
    if batching not in ("per_sample", "reference"):
        raise OctreeInputError(
            "window_partition batching", f"must be per_sample or reference, got {batching!r}"
        )
    k, dil = patch_size, dilation
    block = k * dil
    counts = octree.counts[depth]
    batch_id = octree.batch_id[depth]
    num_samples = counts.shape[0]
    dev = counts.device
    n = batch_id.shape[0]
    if batching == "reference":
        unit = k * max(dil, pad_dilation)
        total = (n + unit - 1) // unit * unit
        pos = torch.arange(n, device=dev)
    else:
        padded = (counts + block - 1) // block * block
        start = torch.cumsum(padded, 0) - padded
        node_start = torch.cumsum(counts, 0) - counts
        total = int(padded.sum())
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
    valid = index >= 0
    if batching == "reference":
        sample = torch.where(valid, batch_id[index.clamp(min=0)], num_samples)
        # Window j of a block starts at its earliest position: its first token has the
        # minimum sample (samples are non-decreasing along the sequence).
        batch = sample[:, 0].contiguous()
        per_sample = torch.bincount(batch, minlength=num_samples + 1)[:num_samples]
        num_owned = int(per_sample.sum())
    else:
        per_sample = padded // k
        num_owned = total // k
        batch = torch.repeat_interleave(
            torch.arange(num_samples, device=dev), per_sample, output_size=num_owned
        )
        sample = torch.where(valid, batch[:, None], num_samples)
    return Windows(
        depth=depth,
        patch_size=k,
        dilation=dil,
        batching=batching,
        index=index,
        valid=valid,
        sample=sample,
        batch=batch,
        num_windows_per_sample=per_sample,
        first_window=torch.cumsum(per_sample, 0) - per_sample,
        slot=slot,
        num_owned=num_owned,
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
