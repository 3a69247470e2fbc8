"""Tiling: grid planning, the official chop, blend windows and tiled maps that reproduce untiled maps."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from resshift_cli.errors import UsageError
from resshift_cli.tiling import (
    Blender,
    Tile,
    axis_starts,
    blend_weights,
    cheapest_side,
    context_window,
    layout_weights,
    official_axis_starts,
    official_tiles,
    plan_cheapest_tiles,
    plan_tiles,
    ramp,
    tiled_map,
)

FAST = settings(max_examples=60, deadline=None)
MAPS = settings(max_examples=25, deadline=None)


@st.composite
def layouts(draw: st.DrawFn, max_side: int = 300, min_tile: int = 8) -> tuple[int, int, int, int]:
    """(length or height, width, tile, overlap) within the bounds of the brief."""
    tile = draw(st.integers(min_tile, 128))
    overlap = draw(st.integers(0, tile // 2))
    return draw(st.integers(1, max_side)), draw(st.integers(1, max_side)), tile, overlap


def coverage(tiles: list[Tile], height: int, width: int) -> torch.Tensor:
    """(height, width) int count of tiles covering each pixel."""
    count = torch.zeros(height, width, dtype=torch.int64)
    for tile in tiles:
        count[tile.slices()] += 1
    return count


def canvas(height: int, width: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """(1, channels, height, width) float32 in [0, 1)."""
    return torch.rand(1, channels, height, width, generator=torch.Generator().manual_seed(seed))


def upscale4(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour ×4: (n, C, h, w) → (n, C, 4h, 4w)."""
    return x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)


# --- axis starts --------------------------------------------------------------------------------------------


@FAST
@given(layouts(), st.sampled_from([1, 2, 4, 8]))
def test_axis_starts_cover_overlap_and_are_minimal(layout, align):
    length, _, tile, overlap = layout
    if tile < length:
        length += (-(length - tile)) % align
    assume(tile - overlap >= align)
    starts = axis_starts(length, tile, overlap, align)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    assert starts == sorted(set(starts))
    assert all(s % align == 0 for s in starts)
    assert all(prev + size - nxt >= overlap for prev, nxt in itertools.pairwise(starts))
    if len(starts) > 1:
        max_step = (tile - overlap) // align * align
        assert (len(starts) - 2) * max_step < length - tile, "one tile fewer would have sufficed"


def test_axis_starts_examples():
    assert axis_starts(64, 64, 16) == [0]
    assert axis_starts(50, 64, 16) == [0]
    assert axis_starts(100, 64, 16) == [0, 36]
    assert axis_starts(256, 64, 16) == [0, 48, 96, 144, 192]
    assert axis_starts(98, 64, 32) == [0, 17, 34]
    assert axis_starts(100, 64, 16, align=4) == [0, 36]
    assert axis_starts(136, 64, 0, align=8) == [0, 32, 72]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((100, 64, 64), UsageError),
        ((100, 64, -1), UsageError),
        ((100, 0, 0), UsageError),
        ((101, 64, 8, 4), ValueError),
    ],
)
def test_axis_starts_rejects_bad_options(args, error):
    with pytest.raises(error):
        axis_starts(*args)


# --- grids --------------------------------------------------------------------------------------------------


@FAST
@given(layouts())
def test_plan_tiles_cover_the_canvas_row_major(layout):
    height, width, tile, overlap = layout
    tiles = plan_tiles(height, width, tile, overlap)
    assert all(t.top >= 0 and t.left >= 0 and t.bottom <= height and t.right <= width for t in tiles)
    assert all(t.size == (min(tile, height), min(tile, width)) for t in tiles)
    assert [(t.top, t.left) for t in tiles] == sorted((t.top, t.left) for t in tiles)
    assert max(t.bottom for t in tiles) == height and max(t.right for t in tiles) == width
    assert int(coverage(tiles, height, width).min()) >= 1


def official_starts_brute(length: int, patch: int, stride: int) -> list[int]:
    """docs/official-behaviour.md §2.4 re-stated as a loop: walk s = 0, S, 2S, … < L, snap overhanging
    starts, keep first copies."""
    if length <= patch:
        return [0]
    starts: list[int] = []
    position = 0
    while position < length:
        start = position if position + patch <= length else length - patch
        if start not in starts:
            starts.append(start)
        position += stride
    return starts


@FAST
@given(
    st.integers(1, 24).map(lambda k: 16 * k),
    st.integers(1, 8).map(lambda k: 16 * k),
    st.integers(0, 40),
)
def test_cheapest_side_covers_the_fewest_pixels(length: int, max_tile: int, overlap: int) -> None:
    assume(max_tile > overlap)
    side = cheapest_side(length, max_tile, overlap, 16)
    if length <= max_tile:
        assert side == length
        return
    sides = [s for s in range(16, max_tile + 1, 16) if s > overlap]
    covered = {s: len(axis_starts(length, s, overlap)) * s for s in sides}
    assert side % 16 == 0 and side <= max_tile
    assert covered[side] == min(covered.values())
    assert side == max(s for s, c in covered.items() if c == covered[side])  # ties: the larger side


def test_cheapest_tiles_cover_4_mp_with_nine_192_pixel_tiles() -> None:
    """512² LR (4 MP out), tiles up to 256, overlap 32: 3 × 192 per axis covers 576 pixels, 3 × 256 would
    cover 768; the tiles overlap by exactly 32 and cover the canvas."""
    tiles = plan_cheapest_tiles(512, 512, 256, 32, 64)
    assert len(tiles) == 9 and {t.size for t in tiles} == {(192, 192)}
    assert sorted({t.left for t in tiles}) == [0, 160, 320]
    assert (coverage(tiles, 512, 512) >= 1).all()


def test_cheapest_tiles_choose_each_axis_alone_and_keep_whole_axes_whole() -> None:
    tiles = plan_cheapest_tiles(256, 512, 256, 32, 64)
    assert {t.size for t in tiles} == {(256, 192)} and len(tiles) == 3
    with pytest.raises(UsageError, match="exceed the overlap"):
        cheapest_side(512, 64, 64, 64)


def test_official_axis_starts_spec_example():
    assert official_axis_starts(1000, 512, 448) == [0, 448, 488]
    assert official_axis_starts(512, 512, 448) == [0]
    assert official_axis_starts(300, 512, 448) == [0]


@FAST
@given(st.integers(1, 400), st.integers(1, 128), st.data())
def test_official_axis_starts_match_the_rule(length, patch, data):
    stride = data.draw(st.integers(1, patch))
    assert official_axis_starts(length, patch, stride) == official_starts_brute(length, patch, stride)


def test_official_axis_starts_reject_stride_above_patch():
    with pytest.raises(UsageError):
        official_axis_starts(100, 32, 33)


def test_official_tiles_are_row_major_patches():
    tiles = official_tiles(1000, 600, 512, 448)
    assert [(t.top, t.left) for t in tiles] == [(0, 0), (0, 88), (448, 0), (448, 88), (488, 0), (488, 88)]
    assert {t.size for t in tiles} == {(512, 512)}
    assert official_tiles(40, 700, 512, 448)[0].size == (40, 512)


# --- tiles and scales ---------------------------------------------------------------------------------------


def test_tile_scaling_and_slices():
    tile = Tile(8, 4, 16, 12)
    assert tile.scaled(4) == Tile(32, 16, 64, 48)
    assert tile.slices(Fraction(1, 4)) == (slice(2, 6), slice(1, 4))
    with pytest.raises(ValueError, match="whole pixel"):
        Tile(2, 0, 8, 8).scaled(Fraction(1, 4))


@FAST
@given(layouts(max_side=200), st.integers(0, 40))
def test_context_window_contains_tile_inside_canvas(layout, context):
    height, width, tile, overlap = layout
    for t in plan_tiles(height, width, tile, overlap):
        window = context_window(t, context, height, width)
        assert window.top <= t.top and window.left <= t.left
        assert window.bottom >= t.bottom and window.right >= t.right
        assert window.top >= 0 and window.left >= 0 and window.bottom <= height and window.right <= width
        assert window.size == (min(t.height + 2 * context, height), min(t.width + 2 * context, width))


# --- blend windows ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 7, 64])
def test_ramp_is_increasing_and_complementary(length):
    up = ramp(length)
    assert bool((up > 0).all() and (up < 1).all())
    assert bool((up[1:] > up[:-1]).all())
    torch.testing.assert_close(up + up.flip(0), torch.ones(length, dtype=torch.float64), rtol=0, atol=1e-12)


def is_unimodal(profile: torch.Tensor) -> bool:
    """True if the 1-D profile rises (weakly) to its maximum and then falls (weakly)."""
    peak = int(profile.argmax())
    return bool(
        (profile[1 : peak + 1] >= profile[:peak]).all() and (profile[peak + 1 :] <= profile[peak:-1]).all()
    )


@FAST
@given(layouts(max_side=200))
def test_blend_weights_are_smooth_and_flat_on_canvas_borders(layout):
    height, width, tile, overlap = layout
    tiles = plan_tiles(height, width, tile, overlap)
    for t, weight in zip(tiles, layout_weights(tiles), strict=True):
        assert weight.shape == t.size
        assert bool((weight > 0).all() and (weight <= 1).all())
        assert all(is_unimodal(column) for column in weight.T) and all(is_unimodal(row) for row in weight)
        if t.top == 0:
            assert torch.equal(weight[0], weight.amax(dim=0))
        if t.bottom == height:
            assert torch.equal(weight[-1], weight.amax(dim=0))
        if t.left == 0:
            assert torch.equal(weight[:, 0], weight.amax(dim=1))
        if t.right == width:
            assert torch.equal(weight[:, -1], weight.amax(dim=1))


def test_blend_weights_ramp_over_the_overlap_only():
    tiles = plan_tiles(1, 100, 64, 16)
    left, right = (blend_weights(t, tiles)[0] for t in tiles)
    assert torch.equal(left[:36], torch.ones(36)) and torch.equal(right[28:], torch.ones(36))
    assert bool((left[36:] < 1).all() and (right[:28] < 1).all())
    torch.testing.assert_close(left[36:] + right[:28], torch.ones(28), rtol=0, atol=1e-6)


def test_blend_weights_stay_flat_on_border_sides_of_irregular_layouts():
    whole, half = Tile(0, 0, 1, 100), Tile(0, 50, 1, 50)
    assert torch.equal(blend_weights(whole, [whole, half]), torch.ones(1, 100))
    fade_in = blend_weights(half, [whole, half])[0]
    assert bool((fade_in[1:] > fade_in[:-1]).all() and (fade_in < 1).all())


def axis_coverage(tiles: list[Tile], height: int, width: int) -> torch.Tensor:
    """(height, width) max over both axes of the number of distinct tile rows/columns covering a pixel."""
    rows = coverage([Tile(t.top, 0, t.height, 1) for t in set(tiles) if t.left == 0], height, 1)
    cols = coverage([Tile(0, t.left, 1, t.width) for t in set(tiles) if t.top == 0], 1, width)
    return torch.maximum(rows.expand(height, width), cols.expand(height, width))


@FAST
@given(layouts(max_side=200))
def test_blend_weights_form_a_partition_of_unity(layout):
    height, width, tile, overlap = layout
    tiles = plan_tiles(height, width, tile, overlap)
    total = torch.zeros(height, width)
    for t, weight in zip(tiles, layout_weights(tiles), strict=True):
        total[t.slices()] += weight
    assert bool((total > 0).all())
    pairwise = axis_coverage(tiles, height, width) <= 2
    torch.testing.assert_close(total[pairwise], torch.ones_like(total[pairwise]), rtol=0, atol=1e-6)
    blender = Blender((1, 1, height, width))
    for t, weight in zip(tiles, layout_weights(tiles), strict=True):
        blender.add(t, torch.full((1, 1, *t.size), 0.75), weight)
    torch.testing.assert_close(blender.result(), torch.full((1, 1, height, width), 0.75), rtol=0, atol=1e-6)


# --- blender ------------------------------------------------------------------------------------------------


def test_blender_averages_uniformly_and_rejects_gaps():
    blender = Blender((1, 1, 4, 6))
    blender.add(Tile(0, 0, 4, 4), torch.full((1, 1, 4, 4), 2.0))
    blender.add(Tile(0, 2, 4, 4), torch.full((1, 1, 4, 4), 4.0), torch.full((4, 4), 3.0))
    assert blender.result()[0, 0, 0].tolist() == [2.0, 2.0, 3.5, 3.5, 4.0, 4.0]
    gappy = Blender((1, 1, 4, 6))
    gappy.add(Tile(0, 0, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="8 canvas pixels are not covered"):
        gappy.result()
    with pytest.raises(ValueError, match="do not fit"):
        gappy.add(Tile(0, 0, 2, 2), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="inside"):
        gappy.add(Tile(2, 4, 4, 4), torch.zeros(1, 1, 4, 4))


# --- tiled maps reproduce untiled maps ----------------------------------------------------------------------


def map_layouts() -> st.SearchStrategy:
    """(height, width, tile, overlap, batch, context, weights) kept small so each example runs fast."""
    return st.tuples(
        layouts(max_side=96, min_tile=12),
        st.integers(1, 5),
        st.integers(0, 6),
        st.sampled_from(["smooth", "uniform"]),
    )


@MAPS
@given(map_layouts())
def test_identity_reproduces_the_input(params):
    (height, width, tile, overlap), batch, context, weights = params
    x = canvas(height, width)
    tiles = plan_tiles(height, width, tile, overlap)
    out = tiled_map(lambda t: t, x, tiles, batch=batch, context=context, weights=weights)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


@MAPS
@given(map_layouts())
def test_nearest_upscale_by_4_matches_untiled(params):
    (height, width, tile, overlap), batch, context, weights = params
    x = canvas(height, width, seed=1)
    tiles = plan_tiles(height, width, tile, overlap)
    out = tiled_map(upscale4, x, tiles, 4, batch=batch, context=context, weights=weights)
    torch.testing.assert_close(out, upscale4(x), rtol=0, atol=1e-6)


@MAPS
@given(map_layouts())
def test_average_pool_by_4_matches_untiled(params):
    (height, width, tile, overlap), batch, context, weights = params
    height, width, tile, overlap, context = 4 * height, 4 * width, 4 * tile, 4 * overlap, 4 * context
    x = canvas(height, width, seed=2)
    tiles = plan_tiles(height, width, tile, overlap, align=4)
    pool = lambda t: F.avg_pool2d(t, 4)  # noqa: E731
    out = tiled_map(pool, x, tiles, Fraction(1, 4), batch=batch, context=context, weights=weights)
    torch.testing.assert_close(out, F.avg_pool2d(x, 4), rtol=0, atol=1e-6)


@MAPS
@given(layouts(max_side=96, min_tile=12), st.integers(0, 3))
def test_context_removes_seams_of_a_neighbourhood_fn(layout, extra_context):
    height, width, tile, overlap = layout
    x = canvas(height, width, seed=3)
    kernel = torch.rand(3, 3, 3, 3, generator=torch.Generator().manual_seed(4))
    conv = lambda t: F.conv2d(t, kernel, padding=1)  # noqa: E731
    tiles = plan_tiles(height, width, tile, overlap)
    out = tiled_map(conv, x, tiles, context=1 + extra_context, batch=3)
    torch.testing.assert_close(out, conv(x), rtol=0, atol=1e-5)


def test_without_context_a_neighbourhood_fn_shows_seams():
    x = canvas(40, 40, seed=5)
    kernel = torch.ones(3, 3, 3, 3) / 27
    tiles = plan_tiles(40, 40, 16, 4)
    out = tiled_map(lambda t: F.conv2d(t, kernel, padding=1), x, tiles)
    assert float((out - F.conv2d(x, kernel, padding=1)).abs().max()) > 1e-2


@MAPS
@given(map_layouts(), st.floats(-1, 1), st.sampled_from([1, 4]))
def test_constant_input_stays_constant(params, value, scale):
    (height, width, tile, overlap), batch, context, weights = params
    x = torch.full((1, 3, height, width), value)
    tiles = plan_tiles(height, width, tile, overlap)
    grow = upscale4 if scale == 4 else (lambda t: t)
    out = tiled_map(
        lambda t: grow(t) * 2 - t.mean(), x, tiles, scale, batch=batch, context=context, weights=weights
    )
    torch.testing.assert_close(
        out, torch.full((1, 3, height * scale, width * scale), value), rtol=0, atol=1e-6
    )


def per_tile_fn(t: torch.Tensor) -> torch.Tensor:
    """A map whose output depends on the whole tile, per batch entry: (n, C, h, w) → (n, C, 4h, 4w)."""
    return upscale4(t.flip(-1)) + t.amax(dim=(1, 2, 3), keepdim=True)


@MAPS
@given(layouts(max_side=96, min_tile=12), st.integers(2, 9), st.integers(0, 5))
def test_batching_does_not_change_the_result(layout, batch, context):
    height, width, tile, overlap = layout
    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(6))
    tiles = plan_tiles(height, width, tile, overlap)
    single = tiled_map(per_tile_fn, x, tiles, 4, context=context)
    batched = tiled_map(per_tile_fn, x, tiles, 4, batch=batch, context=context)
    assert torch.equal(single, batched)


def test_extra_inputs_are_cropped_alongside():
    x, lq = canvas(50, 70, seed=7), canvas(50, 70, channels=2, seed=8)
    tiles = plan_tiles(50, 70, 32, 8)
    out = tiled_map(lambda z, c: z[:, :2] - c, x, tiles, extra=[lq], batch=4, context=3)
    torch.testing.assert_close(out, x[:, :2] - lq, rtol=0, atol=1e-6)


def test_progress_hook_counts_tiles_per_batch():
    calls: list[tuple[int, int]] = []
    tiles = [*plan_tiles(100, 100, 40, 8), Tile(0, 0, 100, 100)]
    tiled_map(
        lambda t: t,
        canvas(100, 100),
        tiles,
        batch=4,
        on_batch=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(4, 10), (8, 10), (9, 10), (10, 10)]


def test_tiled_map_rejects_wrong_output_shape_and_bad_scale():
    x = canvas(32, 32)
    tiles = plan_tiles(32, 32, 16, 4)
    with pytest.raises(ValueError, match="tile function returned shape"):
        tiled_map(lambda t: t, x, tiles, 4)
    with pytest.raises(ValueError, match="whole pixel"):
        tiled_map(lambda t: F.avg_pool2d(t, 4), canvas(30, 30), plan_tiles(30, 30, 16, 4), Fraction(1, 4))


# --- the official chop --------------------------------------------------------------------------------------


def official_chop(fn, x: torch.Tensor, patch: int, stride: int, sf: int) -> torch.Tensor:
    """The upstream ImageSpliterTh loop as docs/official-behaviour.md §2.4 states it: row-major patches,
    sum / count."""
    _, _, height, width = x.shape
    total = torch.zeros(x.shape[0], x.shape[1], height * sf, width * sf)
    count = torch.zeros_like(total)
    for top in official_starts_brute(height, patch, stride):
        for left in official_starts_brute(width, patch, stride):
            result = fn(x[:, :, top : top + patch, left : left + patch])
            rows, cols = slice(top * sf, (top + patch) * sf), slice(left * sf, (left + patch) * sf)
            total[:, :, rows, cols] += result
            count[:, :, rows, cols] += 1
    return total / count


def clamped_tile_fn(t: torch.Tensor) -> torch.Tensor:
    """Toy "sampler": ×4 upscale shifted by the tile's top-left value, clamped to [-1, 1] like upstream."""
    return (upscale4(t) + t[:, :1, :1, :1] / 2).clamp(-1, 1)


@pytest.mark.parametrize(
    ("height", "width", "patch", "stride", "batch"), [(100, 70, 32, 28, 1), (57, 90, 24, 20, 5)]
)
def test_uniform_tiled_map_reproduces_the_official_chop_exactly(height, width, patch, stride, batch):
    x = canvas(height, width, seed=9) * 2 - 1
    expected = official_chop(clamped_tile_fn, x, patch, stride, 4)
    tiles = official_tiles(height, width, patch, stride)
    out = tiled_map(clamped_tile_fn, x, tiles, 4, batch=batch, weights="uniform")
    assert torch.equal(out, expected)
    smooth = tiled_map(clamped_tile_fn, x, tiles, 4, batch=batch)
    assert float((out - smooth).abs().max()) > 1e-3, "overlapping tiles must disagree for this test to bite"
