"""Octree layers against dense / loop references."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from hotformerloc.model import layers
from hotformerloc.model.blocks import DepthView, window_statistics
from hotformerloc.model.layers import (
    RPE,
    Attention,
    AttentionLayout,
    DropPath,
    OctreeConv,
    OctreeDWConv,
    SlotPairs,
    fill_codes_,
    rpe_index,
    rpe_mask_code,
    rpe_window_index,
    rpe_zero_code,
)
from hotformerloc.octree import (
    Octree,
    build_octree,
    node_corner_coords,
    relative_offsets,
    window_partition,
)

DEPTH = 4


@pytest.fixture(scope="module")
def octree() -> Octree:
    """Two samples, depth 4 (16^3 grid), partly empty."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(400, 3, generator=g) * 1.6 - 0.8
    b = torch.rand(300, 3, generator=g) * torch.tensor([1.9, 0.5, 1.9]) - 0.95
    return build_octree([a, b], DEPTH)


def dense(octree: Octree, depth: int, x: torch.Tensor) -> torch.Tensor:
    """(N, C) node features -> (B, C, G, G, G) dense grid, zeros at empty cells."""
    g = 2**depth
    grid = x.new_zeros(octree.batch_size, x.shape[1], g, g, g)
    c = octree.coords(depth)
    grid[octree.batch_id[depth], :, c[:, 0], c[:, 1], c[:, 2]] = x
    return grid


def at_nodes(octree: Octree, depth: int, grid: torch.Tensor) -> torch.Tensor:
    """(B, C, G, G, G) -> (N, C) values at the depth-``depth`` nodes."""
    c = octree.coords(depth)
    return grid[octree.batch_id[depth], :, c[:, 0], c[:, 1], c[:, 2]]


@pytest.fixture(params=["dense", "sparse", "sparse-chunked"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Force the dense or the sparse conv computation (and tiny chunks)."""
    monkeypatch.setattr(layers, "DENSE_FILL", 0.0 if request.param == "dense" else 1.1)
    if request.param == "sparse-chunked":
        monkeypatch.setattr(layers, "CHUNK_BYTES", 200)  # tiles of a few pairs
    return request.param


@pytest.fixture(params=["autograd", "inference", "inference-per-slot"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The out-of-place path autograd records, or the inference paths: as chosen by size
    (im2col for few inputs per row, one gather for small depthwise inputs) or forced per
    slot / per tile."""
    if request.param == "inference-per-slot":
        monkeypatch.setattr(layers, "IM2COL_WIDTH", 0)
        monkeypatch.setattr(layers, "DW_GATHER_ALL", 0)
    return request.param


def run_conv(path: str, conv: torch.nn.Module, x: torch.Tensor, pairs: SlotPairs) -> torch.Tensor:
    if path == "autograd":
        out = conv(x, pairs)
        assert out.requires_grad
        return out.detach()
    with torch.inference_mode():
        return conv(x, pairs)


def test_conv3_equals_dense_conv3d(octree: Octree, mode: str, path: str):
    torch.manual_seed(0)
    conv = OctreeConv(4, 7, 27)  # 4 x 27 inputs per row: im2col at inference
    x = torch.randn(octree.num_nodes(DEPTH), 4)
    pairs = SlotPairs.from_table(octree.neighbours[DEPTH], centre=13)
    assert pairs.sparse == (mode != "dense")
    out = run_conv(path, conv, x, pairs)
    if mode == "sparse-chunked":
        assert len(pairs.tiles(48, x.device)) > 100
    # weight (27, Cin, Cout), slot (dx+1)*9 + (dy+1)*3 + (dz+1) -> kernel[o, i, dx+1, dy+1, dz+1]
    kernel = conv.weight.detach().view(3, 3, 3, 4, 7).permute(4, 3, 0, 1, 2)
    ref = at_nodes(octree, DEPTH, F.conv3d(dense(octree, DEPTH, x), kernel, padding=1))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_dwconv_equals_dense_depthwise_conv3d(octree: Octree, mode: str, path: str):
    torch.manual_seed(1)
    conv = OctreeDWConv(6)
    x = torch.randn(octree.num_nodes(DEPTH), 6)
    out = run_conv(path, conv, x, SlotPairs.from_table(octree.neighbours[DEPTH], centre=13))
    kernel = conv.weight.detach().view(3, 3, 3, 6).permute(3, 0, 1, 2)[:, None]
    ref = at_nodes(octree, DEPTH, F.conv3d(dense(octree, DEPTH, x), kernel, padding=1, groups=6))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_conv2s2_equals_dense_strided_conv3d(octree: Octree, mode: str, path: str):
    torch.manual_seed(2)
    conv = OctreeConv(4, 3, 8, bias=True)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(octree.num_nodes(DEPTH), 4)
    out = run_conv(path, conv, x, SlotPairs.from_table(octree.children[DEPTH - 1]))
    # child slot 4x + 2y + z -> kernel[o, i, x, y, z]
    kernel = conv.weight.detach().view(2, 2, 2, 4, 3).permute(4, 3, 0, 1, 2)
    ref = F.conv3d(dense(octree, DEPTH, x), kernel, conv.bias.detach(), stride=2)
    torch.testing.assert_close(out, at_nodes(octree, DEPTH - 1, ref), atol=1e-5, rtol=1e-5)


def test_conv_gradients_match_between_dense_and_sparse(
    octree: Octree, monkeypatch: pytest.MonkeyPatch
):
    torch.manual_seed(3)
    conv, dw = OctreeConv(4, 5, 27), OctreeDWConv(4)
    x = torch.randn(octree.num_nodes(DEPTH), 4)
    grads = []
    for fill in (0.0, 1.1):
        monkeypatch.setattr(layers, "DENSE_FILL", fill)
        pairs = SlotPairs.from_table(octree.neighbours[DEPTH], centre=13)
        xr = x.clone().requires_grad_()
        (conv(xr, pairs).square().sum() + dw(xr, pairs).sin().sum()).backward()
        grads.append([xr.grad, conv.weight.grad.clone(), dw.weight.grad.clone()])
        conv.zero_grad()
        dw.zero_grad()
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def loop_attention(attn: Attention, x: torch.Tensor, windows, bias: torch.Tensor) -> torch.Tensor:
    """Per-window reference without padding: only valid tokens, plain softmax attention."""
    out = torch.zeros_like(x)
    h = attn.num_heads
    for w in range(windows.index.shape[0]):
        valid = windows.valid[w]
        if not valid.any():
            continue
        idx = windows.index[w][valid]
        q, k, v = attn.qkv(x[idx]).view(len(idx), 3, h, -1).permute(1, 2, 0, 3)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        scores = scores + bias[:, w][:, valid][:, :, valid]
        o = (scores.softmax(-1) @ v).transpose(0, 1).reshape(len(idx), -1)
        out[idx] = attn.proj(o)
    return out


@pytest.mark.parametrize("dilation", [1, 2])
def test_window_attention_equals_per_window_loop(octree: Octree, dilation: int):
    torch.manual_seed(4)
    depth, k, heads = 3, 8, 2
    windows = window_partition(octree, depth, k, dilation)
    assert not windows.valid.all()  # padding is exercised
    x = torch.randn(octree.num_nodes(depth), 16)
    attn = Attention(16, heads)
    rpe = RPE(heads, bound=3)
    index = rpe_index(relative_offsets(octree, depth, windows), 3)
    bias = rpe(index)
    masked = rpe(fill_codes_(index.clone(), ~windows.valid[:, None, :], rpe_mask_code(3)))
    layout = AttentionLayout.from_index(windows.index, x.shape[0])
    with torch.no_grad():
        out_bias = attn(x, layout, masked)  # RPE with the key mask folded in
        out_plain = attn(x, layout)  # key mask only
        ref_bias = loop_attention(attn, x, windows, bias)
        ref_plain = loop_attention(attn, x, windows, torch.zeros_like(bias))
    torch.testing.assert_close(out_bias, ref_bias, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_plain, ref_plain, atol=1e-5, rtol=1e-5)


def test_fully_padded_groups_give_no_nan():
    attn = Attention(8, 2)
    index = torch.tensor([[0, 1, -1], [-1, -1, -1], [2, -1, -1]])
    layout = AttentionLayout.from_index(index, 3)
    x = torch.randn(3, 8, requires_grad=True)
    out = attn(x, layout)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()


def test_rpe_is_sum_of_per_axis_lookups():
    torch.manual_seed(5)
    rpe = RPE(num_heads=3, bound=2)
    offsets = torch.randint(-4, 5, (2, 4, 4, 3))
    index = rpe_index(offsets, 2)
    fill_codes_(index, torch.arange(4) == 3, rpe_mask_code(2))  # key column 3 masked
    index[:, 1, 0, 1] = torch.tensor(rpe_zero_code(2))
    bias = rpe(index)
    assert bias.shape == (3, 2, 4, 4) and bias.is_contiguous()  # head-major
    torch.testing.assert_close(bias[:, 0, :, 3], torch.full((3, 4), layers.MASK_VALUE))
    assert bias[:, 1, 0, 1].tolist() == [0.0, 0.0, 0.0]
    t = rpe.table.detach()
    for w, i, j in ((1, 2, 1), (0, 0, 0), (1, 3, 2)):
        dx, dy, dz = offsets[w, i, j].clamp(-2, 2).tolist()
        expect = t[dx + 2] + t[5 + dy + 2] + t[10 + dz + 2]
        torch.testing.assert_close(bias[:, w, i, j].detach(), expect)
    bias.sum().backward()  # every lookup reaches the table
    assert rpe.table.grad is not None and rpe.table.grad.abs().sum() > 0


@pytest.mark.parametrize(("dilation", "bound"), [(1, 2), (2, 3), (1, 40)])
def test_rpe_window_index_equals_codes_of_relative_offsets(
    octree: Octree, dilation: int, bound: int
):
    windows = window_partition(octree, 3, 8, dilation)
    assert not windows.valid.all()  # padding pairs are exercised
    expect = rpe_index(relative_offsets(octree, 3, windows), bound)
    coords = octree.coords(3)[windows.index.clamp(min=0)]
    got = rpe_window_index(coords, windows.valid, bound)
    assert got.dtype == torch.int64 and torch.equal(got, expect)


def test_rpe_window_index_clamps_and_zeroes_padding():
    coords = torch.tensor([[[0, 0, 0], [5, -1, 2], [9, 9, 9]]])
    valid = torch.tensor([[True, True, False]])
    index = rpe_window_index(coords, valid, bound=2)  # side 5: xy = (dx+2)*5 + dy+2
    assert index[:, 0, 0, 1].tolist() == [0 * 5 + 3, 0]  # (-5, 1, -2) clamped to (-2, 1, -2)
    assert index[:, 0, 1, 0].tolist() == [4 * 5 + 1, 4]  # (5, -1, 2) clamped to (2, -1, 2)
    zero_offset = [2 * 5 + 2, 2]
    assert index[:, 0, 0, 2].tolist() == zero_offset and index[:, 0, 2, 1].tolist() == zero_offset


def test_rpe_tables_are_reused_until_the_parameter_changes():
    torch.manual_seed(4)
    rpe = RPE(num_heads=2, bound=2)
    index = rpe_index(torch.randint(-3, 4, (1, 3, 3, 3)), 2)
    with torch.no_grad():
        first = rpe.tables()
        assert rpe.tables() is first  # kept
        before = rpe(index)
        rpe.table.add_(1.0)  # in place: a new version
        assert rpe.tables() is not first
        torch.testing.assert_close(rpe(index), before + 3.0)  # three lookups of +1 each
    assert rpe.tables()[0].requires_grad  # with gradients: built afresh, in the graph


@pytest.mark.parametrize("fill", [0.0, 1.1])  # dense / sparse tables
def test_inference_convs_equal_the_autograd_path(
    octree: Octree, monkeypatch: pytest.MonkeyPatch, fill: float
):
    """The in-place, buffer-reusing inference path of the convs gives what the
    out-of-place path that autograd records gives."""
    torch.manual_seed(8)
    monkeypatch.setattr(layers, "DENSE_FILL", fill)
    convs = [(OctreeConv(4, 5, 27), 13), (OctreeConv(4, 6, 8, bias=True), None)]
    dw = OctreeDWConv(4)
    x = torch.randn(octree.num_nodes(DEPTH), 4)
    nb = SlotPairs.from_table(octree.neighbours[DEPTH], centre=13)
    ch = SlotPairs.from_table(octree.children[DEPTH - 1])
    graph = [convs[0][0](x, nb), convs[1][0](x, ch), dw(x, nb)]
    assert all(g.requires_grad for g in graph)
    with torch.inference_mode():
        fast = [convs[0][0](x, nb), convs[1][0](x, ch), dw(x, nb)]
    for a, b in zip(graph, fast, strict=True):
        torch.testing.assert_close(b, a.detach(), atol=1e-6, rtol=1e-6)


def test_group_layout_orders_tokens_by_group():
    group = torch.tensor([1, 0, 1, 2, 1, 0])
    layout = AttentionLayout.group_by(group, 4)
    assert layout.index.tolist() == [[1, 5, 0], [0, 2, 4], [3, 0, 0], [0, 0, 0]]
    assert layout.valid.tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0], [0, 0, 0]]
    x = torch.arange(6.0)[:, None]
    assert torch.equal(layout.scatter(layout.gather(x)), x)


def test_drop_path_is_per_sample():
    torch.manual_seed(6)
    dp = DropPath(0.5).train()
    batch_id = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    out = dp(torch.ones(8, 4), batch_id, 3)
    for b in range(3):
        rows = out[batch_id == b]
        assert torch.all(rows == rows[0, 0]) and rows[0, 0].item() in (0.0, 2.0)
    assert torch.equal(dp.eval()(torch.ones(8, 4), batch_id, 3), torch.ones(8, 4))


def test_window_statistics_match_torch_cov(octree: Octree):
    depth = 3
    view = DepthView(octree, depth, patch_size=8)
    win = view.windows(1)
    coords = node_corner_coords(octree, depth)
    window = win.slot // win.patch_size
    stats = window_statistics(coords, window, win.valid.sum(1), "cov")
    for w in (0, win.num_windows - 1):
        pts = coords[win.index[w][win.valid[w]]]
        torch.testing.assert_close(stats[w, :3], pts.mean(0))
        if len(pts) >= 2:
            cov = torch.cov(pts.T)
            iu = torch.triu_indices(3, 3)
            torch.testing.assert_close(stats[w, 3:], cov[iu[0], iu[1]], atol=1e-6, rtol=1e-5)
    one = window_statistics(coords[:1], torch.zeros(1, dtype=torch.long), torch.ones(1), "var")
    assert one.shape == (1, 6) and torch.all(one[0, 3:] == 0)


def test_serial_cpu_runs_gathers_on_one_thread_and_matmuls_on_all(
    monkeypatch: pytest.MonkeyPatch,
):
    """Inside an inference forward the thread count is 1, matmul-heavy blocks get the
    count in force on entry, and it is restored afterwards (also after an error)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cpu = torch.device("cpu")
        seen = []
        with torch.no_grad(), layers.serial_cpu(cpu):
            seen.append(torch.get_num_threads())
            with layers.matmul_threads():
                seen.append(torch.get_num_threads())
            seen.append(torch.get_num_threads())
            with layers.serial_cpu(cpu):  # nested: no change
                seen.append(torch.get_num_threads())
        seen.append(torch.get_num_threads())
        assert seen == [1, 2, 1, 1, 2]
        with layers.serial_cpu(cpu):  # grad enabled (training): no switching
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), torch.no_grad(), layers.serial_cpu(cpu):
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
        with layers.matmul_threads():  # outside serial_cpu: nothing
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"window_batching": "reference"},  # pair masks, leaky windows
        {"adape_mode": "none", "dilation": 2},  # relay tokens from CPE (no residual)
        {"disable_rt": True, "disable_rpe": True},  # plain OctFormer levels, key masks
    ],
)
@pytest.mark.parametrize("fill", [0.35, 0.0, 1.1])  # as chosen / all dense / all sparse
def test_serial_cpu_leaves_descriptors_unchanged(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, object], fill: float
):
    """The CPU inference policy (one torch thread per op, matmuls on all, blocks cut into
    parts run at once on threads) gives the plain forward's descriptors."""
    from hotformerloc import create_model

    torch.manual_seed(9)
    monkeypatch.setattr(layers, "DENSE_FILL", fill)
    monkeypatch.setattr(layers, "MIN_SPLIT_ROWS", 16)  # split even these small clouds
    if fill == 0.0:  # and the per-slot paths of every conv
        monkeypatch.setattr(layers, "IM2COL_WIDTH", 0)
        monkeypatch.setattr(layers, "DW_GATHER_ALL", 0)
    model = create_model("hotformerloc-small", **overrides).eval()
    clouds = [torch.rand(3000, 3) * 2 - 1, torch.rand(2000, 3) * 2 - 1]
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            split = model.embed(clouds)
            monkeypatch.setattr(layers, "SPLIT_CPU", False)
            serial = model.embed(clouds)
            monkeypatch.setattr(layers, "SERIAL_CPU", False)
            plain = model.embed(clouds)
    finally:
        torch.set_num_threads(saved)
    torch.testing.assert_close(split, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(serial, plain, atol=1e-5, rtol=0)


def test_run_jobs_covers_every_row_once_on_several_threads(monkeypatch: pytest.MonkeyPatch):
    """Inside serial_cpu each job is cut into near-equal ranges (none shorter than
    min_rows) that partition [0, n), run on more than one thread, in the caller's
    inference mode; outside, each job runs whole on the calling thread."""
    import threading

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: list[tuple[str, int, int, str, bool, int]] = []
    lock = threading.Lock()

    def job(name: str) -> layers.Job:
        def fn(a: int, b: int) -> None:
            time.sleep(0.02)  # long enough for the second thread to take a range
            with lock:
                seen.append(
                    (
                        name,
                        a,
                        b,
                        threading.current_thread().name,
                        torch.is_inference_mode_enabled(),
                        torch.get_num_threads(),
                    )
                )

        return layers.Job(300 if name == "big" else 5, fn, min_rows=100)

    try:
        with torch.inference_mode(), layers.serial_cpu(torch.device("cpu")):
            layers.run_jobs([job("big"), job("small")])
        inside = list(seen)
        seen.clear()
        layers.run_jobs([job("big"), job("small")])
        outside = list(seen)
    finally:
        torch.set_num_threads(saved)
    ranges = sorted((n, a, b) for n, a, b, *_ in inside)
    assert ranges == [("big", 0, 150), ("big", 150, 300), ("small", 0, 5)]
    assert len({t for *_, t, _, _ in inside}) == 2  # two threads
    assert all(inf and threads == 1 for *_, inf, threads in inside)
    assert [(n, a, b) for n, a, b, *_ in outside] == [("big", 0, 300), ("small", 0, 5)]
    assert {t for *_, t, _, _ in outside} == {threading.current_thread().name}


def test_run_jobs_raises_a_worker_error_after_all_ranges_end():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    done: list[int] = []

    def fn(a: int, b: int) -> None:
        if a > 0:
            raise ValueError(f"range {a}-{b}")
        time.sleep(0.05)
        done.append(a)

    try:
        with (
            pytest.raises(ValueError, match="range 100-200"),
            torch.no_grad(),
            layers.serial_cpu(torch.device("cpu")),
        ):
            layers.split_run(200, fn, min_rows=100)
    finally:
        torch.set_num_threads(saved)
    assert done == [0] and torch.get_num_threads() == saved


def test_attention_layout_part_rows_cover_the_valid_slots():
    index = torch.tensor([[0, 1, -1], [2, -1, -1], [3, 4, 5]])
    layout = AttentionLayout.from_index(index, 6)
    slots, tokens = layout.part_rows(1, 3)
    assert slots.tolist() == [0, 3, 4, 5] and tokens.tolist() == [2, 3, 4, 5]
    assert layout.part_rows(1, 3)[0] is slots  # cached


def test_a_forked_child_makes_its_own_split_threads():
    """The parent's worker threads do not survive fork: a child's forward must not wait on
    them."""
    import multiprocessing as mp

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad(), layers.serial_cpu(torch.device("cpu")):
            layers.split_run(400, lambda a, b: None)  # the parent's pool exists now
        ctx = mp.get_context("fork")
        proc = ctx.Process(target=_split_in_child)
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
    finally:
        torch.set_num_threads(saved)


def _split_in_child() -> None:
    torch.set_num_threads(2)
    done: list[int] = []
    with torch.no_grad(), layers.serial_cpu(torch.device("cpu")):
        layers.split_run(400, lambda a, b: done.append(b - a))
    raise SystemExit(0 if sorted(done) == [200, 200] else 1)
