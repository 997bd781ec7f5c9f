"""Transformer blocks of HOTFormerLoc (spec 2.3-2.5) and the per-depth table cache.

* :class:`DepthView`: everything one forward needs about one octree depth (prepared
  neighbour and child tables, windows, attention layouts, RPE table rows and masks),
  computed once on first use and shared by every block at that depth; its ``batching``
  (``per_sample`` or ``reference``, see :mod:`hotformerloc.octree.windows`) decides how the
  windows are cut and masked;
* :class:`PreNormBlock`: ``x += DP(MHSA(LN(x))); x += DP(MLP(LN(x)))`` over the groups of
  an :class:`~hotformerloc.model.layers.AttentionLayout` (RTSA is this block over the relay
  tokens of each sample);
* :class:`OctFormerBlock`: ``x += CPE(x)`` then a :class:`PreNormBlock` over (optionally
  dilated) windows with RPE; given relay tokens it is the H-OSA block (one relay token
  prepended to each window);
* :class:`RelayTokenInit`: masked window means + ADaPE, or mean of CPE(F);
* :class:`HOTFormerBlock`: RTSA over all relay tokens of a sample, then H-OSA per level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hotformerloc.model.config import ADAPE_DIMS
from hotformerloc.model.layers import (
    CPE,
    MASK_VALUE,
    MIN_SPLIT_ROWS,
    MLP,
    RPE,
    Attention,
    AttentionLayout,
    DropPath,
    Job,
    SlotPairs,
    fill_codes_,
    matmul_threads,
    rpe_mask_code,
    rpe_window_index,
    rpe_zero_code,
    run_jobs,
    splitting,
)
from hotformerloc.octree import (
    Octree,
    Windows,
    node_corner_coords,
    window_partition,
)
from hotformerloc.octree.windows import WindowBatching

_T = TypeVar("_T")


class DepthView:
    """Lazily computed, cached tables of one octree depth for one forward pass.

    Attributes: ``octree``, ``depth``, ``patch_size`` (K), ``batching``, ``pad_dilation``
    (``reference`` batching pads the depth's node sequence to a multiple of
    ``K * pad_dilation``), ``batch_size`` (B), ``num_nodes`` (N), ``batch_id`` ((N,) int64
    sample of each node).

    Relay tokens (H-OSA): one per window owned by a sample, i.e. the first
    ``windows(1).num_owned`` windows (all of them in ``per_sample`` mode; ``reference``
    mode's windows of padding only get none: the reference's relay tokens of those windows
    are masked from every other token and affect nothing).
    """

    def __init__(
        self,
        octree: Octree,
        depth: int,
        patch_size: int,
        batching: WindowBatching = "per_sample",
        pad_dilation: int = 1,
    ):
        self.octree = octree
        self.depth = depth
        self.patch_size = patch_size
        self.batching = batching
        self.pad_dilation = pad_dilation
        self.reference = batching == "reference"
        self.batch_size = octree.batch_size
        self.batch_id = octree.batch_id[depth]
        self.num_nodes = int(self.batch_id.shape[0])
        self._cache: dict[tuple[Any, ...], Any] = {}

    def _cached(self, key: tuple[Any, ...], make: Callable[[], _T]) -> _T:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def neighbours(self) -> SlotPairs:
        """Pairs of the 27-neighbour table (for the 3x3x3 convs at this depth)."""
        return self._cached(
            ("nb",),
            lambda: SlotPairs.from_table(self.octree.neighbours[self.depth], centre=13),
        )

    @property
    def children(self) -> SlotPairs:
        """Pairs of the child table (for the stride-2 convs from depth + 1 to this depth)."""
        return self._cached(("ch",), lambda: SlotPairs.from_table(self.octree.children[self.depth]))

    def windows(self, dilation: int) -> Windows:
        """Windows of K nodes (dilated when ``dilation`` > 1), per :attr:`batching`."""
        return self._cached(
            ("win", dilation),
            lambda: window_partition(
                self.octree,
                self.depth,
                self.patch_size,
                dilation,
                batching=self.batching,
                pad_dilation=self.pad_dilation,
            ),
        )

    def layout(self, dilation: int) -> AttentionLayout:
        """Attention layout of the node windows (tokens = the N nodes)."""
        return self._cached(
            ("layout", dilation),
            lambda: AttentionLayout.from_index(self.windows(dilation).index, self.num_nodes),
        )

    @property
    def relay_layout(self) -> AttentionLayout:
        """Layout of the non-dilated windows with each window's relay token prepended.

        Tokens are ``cat([nodes (N), relay tokens (num_owned)])``; groups have K + 1 slots,
        slot 0 is the window's relay token (padding for a window of padding only).
        """

        def make() -> AttentionLayout:
            win = self.windows(1)
            rt = self.num_nodes + torch.arange(win.num_windows, device=win.index.device)
            if win.num_owned < win.num_windows:
                rt[win.num_owned :] = -1
            index = torch.cat([rt[:, None], win.index], 1)
            return AttentionLayout.from_index(index, self.num_nodes + win.num_owned)

        return self._cached(("relay_layout",), make)

    @property
    def relay_sample(self) -> Tensor:
        """(num_owned,) int64 sample of each relay token (its window's left-most sample)."""
        return self._cached(
            ("relay_sample",), lambda: self.windows(1).batch[: self.windows(1).num_owned]
        )

    @property
    def relay_batch_id(self) -> Tensor:
        """(N + num_owned,) sample of each token of :attr:`relay_layout`."""
        return self._cached(("relay_batch",), lambda: torch.cat([self.batch_id, self.relay_sample]))

    def _token_samples(self, dilation: int, relay: bool) -> Tensor:
        """(nw, L) sample of each slot (``B`` at padding; the relay slot carries its
        window's owner)."""
        win = self.windows(dilation)
        if relay:
            return torch.cat([win.batch[:, None], win.sample], 1)
        return win.sample

    def pair_mask(self, dilation: int, relay: bool, dtype: torch.dtype) -> Tensor | None:
        """Additive attention mask without RPE: None in ``per_sample`` mode (the layout's key
        mask is right); in ``reference`` mode (1, nw, L, L) :data:`MASK_VALUE` where the
        query's and the key's samples differ (padding is sample B), else 0."""
        if not self.reference:
            return None

        def make() -> Tensor:
            s = self._token_samples(dilation, relay)
            differ = s[None, :, :, None] != s[None, :, None, :]
            return torch.zeros(differ.shape, dtype=dtype, device=s.device).masked_fill_(
                differ, MASK_VALUE
            )

        return self._cached(("pair_mask", dilation, relay, dtype), make)

    def bias_index(self, dilation: int, bound: int, relay: bool) -> Tensor:
        """(2, nw, L, L) int64 codes for :class:`RPE` (see :func:`rpe_window_index`).

        Windows at ``dilation`` (L = K), or with relay tokens prepended (``relay``, L = K + 1,
        non-dilated): clamped offsets for node pairs, the zero code for relay-token pairs,
        and the mask code for every padding key column (``per_sample``) or for every pair
        of different samples (``reference``; padding is sample B).
        """

        def make() -> Tensor:
            win = self.windows(dilation)
            coords = self.octree.coords(self.depth)[win.index.clamp(min=0)]
            index = rpe_window_index(coords, win.valid, bound)
            valid = win.valid
            if relay:
                nw, k = valid.shape
                zero = torch.tensor(rpe_zero_code(bound), dtype=index.dtype, device=index.device)
                with_relay = zero.view(2, 1, 1, 1).repeat(1, nw, k + 1, k + 1)
                with_relay[:, :, 1:, 1:] = index
                index = with_relay
                valid = F.pad(valid, (1, 0), value=True)
            if self.reference:
                s = self._token_samples(dilation, relay)
                differ = s[:, :, None] != s[:, None, :]
                return fill_codes_(index, differ, rpe_mask_code(bound))
            return fill_codes_(index, ~valid[:, None, :], rpe_mask_code(bound))

        return self._cached(("bias", dilation, bound, relay), make)

    @property
    def sample_layout(self) -> AttentionLayout:
        """All nodes of each sample as one group (B groups, padded to the largest sample)."""
        return self._cached(
            ("samples",), lambda: AttentionLayout.group_by(self.batch_id, self.batch_size)
        )


class PreNormBlock(nn.Module):
    """Pre-norm transformer block over the groups of an attention layout (no CPE, no RPE).

    ``x += DP(MHSA(LN(x))); x += DP(MLP(LN(x)))`` with MLP ratio 4. Used directly as
    the RTSA block (groups = the relay tokens of each sample).
    """

    def __init__(self, dim: int, num_heads: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, 4 * dim)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: Tensor,
        layout: AttentionLayout,
        batch_id: Tensor,
        batch_size: int,
        mask: Tensor | None = None,
    ) -> Tensor:
        """``x`` (T, C) tokens, ``batch_id`` (T,) their samples -> (T, C).

        ``mask``: optional (H or 1, nw, L, L) additive attention mask (default: the key
        mask).
        """
        return self.run(x, layout, batch_id, batch_size, lambda a, b: mask)

    def run(
        self,
        x: Tensor,
        layout: AttentionLayout,
        batch_id: Tensor,
        batch_size: int,
        mask_of: Callable[[int, int], Tensor | None],
    ) -> Tensor:
        """:meth:`forward` with the mask of groups [a, b) given by ``mask_of(a, b)`` (whole
        mask: ``mask_of(0, nw)``; None: the key mask).

        In CPU inference (:func:`~hotformerloc.model.layers.serial_cpu`, eval mode) the
        groups are cut into ranges run at once: each gathers its tokens and runs the whole
        block on them (every step after the gather is per token or per group).
        """
        if self.training or not splitting(x, self.norm1.weight):
            mask = mask_of(0, layout.index.shape[0])
            x = x + self.drop_path(self.attn(self.norm1(x), layout, mask), batch_id, batch_size)
            return x + self.drop_path(self.mlp(self.norm2(x)), batch_id, batch_size)
        out, job = self.job(x, layout, mask_of)
        run_jobs([job])
        return out

    def job(
        self, x: Tensor, layout: AttentionLayout, mask_of: Callable[[int, int], Tensor | None]
    ) -> tuple[Tensor, Job]:
        """Inference (eval mode): the output of :meth:`run` and the :class:`Job` over
        groups that fills it."""
        nw, length = layout.index.shape
        out = torch.empty_like(x)
        key_mask = layout.key_mask(x.dtype).view(1, nw, 1, length)

        def part(a: int, b: int) -> None:
            t = x.index_select(0, layout.index[a:b].reshape(-1))  # (n L, C)
            mask = mask_of(a, b)
            mask = key_mask[:, a:b] if mask is None else mask
            heads = self.attn.heads(self.norm1(t).view(b - a, length, -1), mask)
            # From here on per token: the valid slots only (no MLP on padding).
            slots, tokens = layout.part_rows(a, b)
            t = t.index_select(0, slots)
            with matmul_threads():
                t += self.attn.proj(heads.view(-1, t.shape[1]).index_select(0, slots))
            t += self.mlp(self.norm2(t))
            out.index_copy_(0, tokens, t)

        return out, Job(nw, part, max(1, MIN_SPLIT_ROWS // length))


class OctFormerBlock(PreNormBlock):
    """OctFormer block (spec 2.4): ``x += CPE(x)``, then window MHSA with RPE and MLP.

    ``dilation`` > 1 uses dilated windows. ``rpe_bound`` None disables the RPE. Called with
    relay tokens it is the H-OSA block (spec 2.5 c.2): the windows are non-dilated, each
    gets its relay token as an extra first token (zero RPE on its row and column), and the
    updated relay tokens are returned too.
    """

    def __init__(
        self, dim: int, num_heads: int, drop_path: float, dilation: int, rpe_bound: int | None
    ):
        super().__init__(dim, num_heads, drop_path)
        self.dilation = dilation
        self.cpe = CPE(dim)
        self.rpe = RPE(num_heads, rpe_bound) if rpe_bound is not None else None

    def mask_of(
        self, view: DepthView, relay: bool, dtype: torch.dtype
    ) -> Callable[[int, int], Tensor | None]:
        """The attention mask of windows [a, b) (RPE bias, reference pair mask or None)."""
        dilation = 1 if relay else self.dilation
        rpe = self.rpe
        if rpe is None:
            pair = view.pair_mask(dilation, relay, dtype)
            return lambda a, b: None if pair is None else pair[:, a:b]
        index = view.bias_index(dilation, rpe.bound, relay)
        tables = rpe.tables()  # built once for every range of windows
        return lambda a, b: RPE.lookup(tables, index[:, a:b])

    def forward(  # type: ignore[override]  # a DepthView replaces the base's layout args
        self, x: Tensor, view: DepthView, relay: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``x`` (N, C) node features at ``view.depth``; ``relay`` (nw, C) or None.

        Returns ``(x, relay)`` updated (``relay`` stays None when not given).
        """
        x = self.cpe(x, view.neighbours, residual=True)
        if relay is None:
            mask = self.mask_of(view, False, x.dtype)
            layout = view.layout(self.dilation)
            return self.run(x, layout, view.batch_id, view.batch_size, mask), None
        tokens = torch.cat([x, relay])
        tokens = self.run(
            tokens,
            view.relay_layout,
            view.relay_batch_id,
            view.batch_size,
            self.mask_of(view, True, x.dtype),
        )
        return tokens[: view.num_nodes], tokens[view.num_nodes :]


def window_statistics(coords: Tensor, window: Tensor, counts: Tensor, mode: str) -> Tensor:
    """ADaPE input: per-window mean and (co)variances of node coordinates.

    Args:
        coords: (N, 3) float node corner coordinates in [-1, 1].
        window: (N,) int64 window of each node.
        counts: (nw,) valid nodes per window (>= 1).
        mode: ``pos`` -> (nw, 3) mean; ``var`` -> (nw, 6) mean + unbiased variances
            (xx, yy, zz); ``cov`` -> (nw, 9) mean + unbiased upper-triangular covariance
            (xx, xy, xz, yy, yz, zz). (Co)variances are 0 for windows with < 2 nodes.
    """
    n = counts.to(coords.dtype)[:, None]
    mean = coords.new_zeros(counts.shape[0], 3).index_add_(0, window, coords) / n
    if mode == "pos":
        return mean
    d = coords - mean[window]
    if mode == "var":
        prods = d * d
    else:
        x, y, z = d.unbind(1)
        prods = torch.stack([x * x, x * y, x * z, y * y, y * z, z * z], 1)
    sums = prods.new_zeros(counts.shape[0], prods.shape[1]).index_add_(0, window, prods)
    cov = torch.where(n >= 2, sums / (n - 1).clamp_min(1), torch.zeros_like(sums))
    return torch.cat([mean, cov], 1)


class RelayTokenInit(nn.Module):
    """Relay-token initialisation (spec 2.5 b): one token per non-dilated window.

    ``adape_mode`` in {pos, var, cov}: RT = masked mean of the window's node features +
    ADaPE(window statistics), ADaPE = Linear(n, C) -> GELU -> Linear(C, C) shared by all
    levels. ``adape_mode`` ``none``: RT = masked mean of CPE(F) = LN(DWConv(F)) (one CPE
    shared by all levels; not a residual). The mean and the statistics are over the
    window's nodes of its owner (left-most sample): in ``reference`` batching the other
    samples' nodes of a leaky window are left out.
    """

    def __init__(self, dim: int, adape_mode: str):
        super().__init__()
        self.adape_mode = adape_mode
        if adape_mode == "none":
            self.cpe = CPE(dim)
        else:
            n = ADAPE_DIMS[adape_mode]
            self.adape = nn.Sequential(nn.Linear(n, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: Tensor, view: DepthView) -> Tensor:
        """``x`` (N, C) node features at ``view.depth`` -> relay tokens (num_owned, C)."""
        win = view.windows(1)
        window = win.slot // win.patch_size
        src = self.cpe(x, view.neighbours) if self.adape_mode == "none" else x
        coords = None
        if self.adape_mode != "none":
            coords = node_corner_coords(view.octree, view.depth).to(x.dtype)
        if view.reference:
            # Only the nodes of each window's owner (every owned window keeps >= 1 node).
            keep = (view.batch_id == win.batch[window]).nonzero().view(-1)
            window, src = window[keep], src[keep]
            coords = None if coords is None else coords[keep]
            counts = torch.bincount(window, minlength=win.num_owned)
        else:
            counts = win.valid.sum(1)
        rt = src.new_zeros(win.num_owned, x.shape[1]).index_add_(0, window, src)
        rt = rt / counts.to(x.dtype)[:, None]
        if coords is None:
            return rt
        return rt + self.adape(window_statistics(coords, window, counts, self.adape_mode))


class HOTFormerBlock(nn.Module):
    """One HOTFormer block (spec 2.5 c): RTSA over each sample's relay tokens of all levels,
    then one H-OSA block per level (separate weights per level)."""

    def __init__(
        self, dim: int, num_heads: int, num_levels: int, drop_path: float, rpe_bound: int | None
    ):
        super().__init__()
        self.rtsa = PreNormBlock(dim, num_heads, drop_path)
        self.hosa = nn.ModuleList(
            OctFormerBlock(dim, num_heads, drop_path, 1, rpe_bound) for _ in range(num_levels)
        )

    def forward(
        self,
        feats: list[Tensor],
        relays: list[Tensor],
        views: list[DepthView],
        relay_layout: AttentionLayout,
        relay_batch_id: Tensor,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """``feats[j]`` (N_j, C), ``relays[j]`` (nw_j, C) per level; ``relay_layout`` groups
        ``cat(relays)`` by sample (``relay_batch_id`` its (sum nw_j,) samples)."""
        if not self.training and splitting(feats[0], self.rtsa.norm1.weight):
            return self._levels_at_once(feats, relays, views, relay_layout)
        rt = self.rtsa(torch.cat(relays), relay_layout, relay_batch_id, views[0].batch_size)
        relays = list(rt.split([r.shape[0] for r in relays]))
        out_f, out_r = [], []
        for block, f, r, view in zip(self.hosa, feats, relays, views, strict=True):
            f, r = block(f, view, r)
            out_f.append(f)
            out_r.append(r)
        return out_f, out_r

    def _levels_at_once(
        self,
        feats: list[Tensor],
        relays: list[Tensor],
        views: list[DepthView],
        relay_layout: AttentionLayout,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """CPU inference: the RTSA and the CPEs of all levels run as one set of jobs (the
        CPEs do not read the relay tokens), then the attention and MLP of all levels (the
        levels are independent)."""
        hosa = cast("list[OctFormerBlock]", list(self.hosa))
        rt, rtsa = self.rtsa.job(torch.cat(relays), relay_layout, lambda a, b: None)
        cpes = [
            block.cpe.job(f, view.neighbours, residual=True)
            for block, f, view in zip(hosa, feats, views, strict=True)
        ]
        run_jobs([rtsa, *(job for _, job in cpes)])
        relays = list(rt.split([r.shape[0] for r in relays]))
        outs = [
            block.job(torch.cat([x, r]), view.relay_layout, block.mask_of(view, True, x.dtype))
            for block, (x, _), r, view in zip(hosa, cpes, relays, views, strict=True)
        ]
        run_jobs([job for _, job in outs])
        return (
            [t[: view.num_nodes] for (t, _), view in zip(outs, views, strict=True)],
            [t[view.num_nodes :] for (t, _), view in zip(outs, views, strict=True)],
        )
