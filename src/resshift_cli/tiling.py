"""Tile grids, smooth blend windows and accumulate-and-normalise for tiled inference; model-agnostic.

Units: a `Tile` is a rectangle on the *input* canvas in input pixels. A map with `scale` s (4 for VAE
decode, 1 for the denoiser, `Fraction(1, 4)` for VAE encode) turns an input rectangle into the same
rectangle s× larger on the output canvas; `Tile.scaled(s)` gives it and refuses non-whole pixels.

Two layouts:
- ours (`plan_tiles`): as few tiles as possible, evenly spread, neighbours overlapping by at least the
  requested overlap, blended with raised-cosine windows (`layout_weights`); `plan_cheapest_tiles` also
  picks the tile side per axis (up to a maximum) that covers the fewest pixels.
- the official "chop" (`official_tiles`, docs/official-behaviour.md §2.4): fixed stride with the last
  start snapped to the edge, blended by uniform averaging (`weights="uniform"` in `tiled_map`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import torch
from torch import Tensor

from resshift_cli.errors import UsageError

Scale = int | Fraction
WeightKind = Literal["smooth", "uniform"]


@dataclass(frozen=True)
class Tile:
    """A rectangle `[top, top + height) × [left, left + width)` on a canvas, in that canvas's pixels."""

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        """One past the last row."""
        return self.top + self.height

    @property
    def right(self) -> int:
        """One past the last column."""
        return self.left + self.width

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width

    def scaled(self, scale: Scale = 1) -> Tile:
        """The same rectangle on a canvas `scale`× larger; ValueError if a side is not a whole pixel there."""
        return Tile(*(_scale_coord(v, scale) for v in (self.top, self.left, self.height, self.width)))

    def slices(self, scale: Scale = 1) -> tuple[slice, slice]:
        """(rows, cols) slices of the rectangle on a canvas `scale`× larger, for `canvas[..., rows, cols]`."""
        tile = self.scaled(scale)
        return slice(tile.top, tile.bottom), slice(tile.left, tile.right)


def _scale_coord(value: int, scale: Scale) -> int:
    scaled = Fraction(scale) * value
    if scaled.denominator != 1:
        raise ValueError(f"tile coordinate {value} × scale {scale} is not a whole pixel; align tiles to it")
    return int(scaled)


def _check_tile_options(tile: int, overlap: int, align: int) -> None:
    if tile < 1 or align < 1:
        raise UsageError(f"tile size {tile} and alignment {align} must be positive")
    if not 0 <= overlap < tile:
        raise UsageError(f"tile overlap {overlap} must be at least 0 and smaller than the tile size {tile}")


def axis_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Tile starts along one axis of `length` pixels for tiles of `tile` pixels (our layout).

    `tile >= length` gives `[0]` (one tile of `length` pixels). Otherwise the starts are evenly spread
    from 0 to `length - tile` (the last tile touches the edge), every start is a multiple of `align`,
    neighbouring tiles overlap by at least `overlap` pixels, and no layout with these rules has fewer
    tiles. `length - tile` must then be a multiple of `align` (ValueError otherwise), and
    `tile - overlap >= align` (UsageError otherwise). Result: strictly increasing ints.
    """
    _check_tile_options(tile, overlap, align)
    if length < 1:
        raise ValueError(f"canvas side {length} must be positive")
    if tile >= length:
        return [0]
    span, step = length - tile, (tile - overlap) // align
    if span % align:
        raise ValueError(f"canvas side {length} minus tile {tile} is not a multiple of the alignment {align}")
    if step == 0:
        raise UsageError(f"tile size {tile} minus overlap {overlap} must be at least the alignment {align}")
    units = span // align
    gaps = -(-units // step)
    return [align * (i * units // gaps) for i in range(gaps + 1)]


def official_axis_starts(length: int, patch: int, stride: int) -> list[int]:
    """Patch starts of the official chop (docs/official-behaviour.md §2.4) along one axis of `length` pixels.

    `length <= patch` gives `[0]`; otherwise `[0, stride, 2·stride, … < length]` with every start
    `s > length - patch` replaced by `length - patch`, duplicates dropped keeping the first.
    Upstream asserts `1 <= stride <= patch`; so does this (UsageError).
    """
    if patch < 1 or not 1 <= stride <= patch:
        raise UsageError(f"chop stride {stride} must be between 1 and the chop size {patch}")
    if length <= patch:
        return [0]
    return list(dict.fromkeys(min(s, length - patch) for s in range(0, length, stride)))


def _grid(tops: list[int], lefts: list[int], height: int, width: int) -> list[Tile]:
    return [Tile(top, left, height, width) for top in tops for left in lefts]


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> list[Tile]:
    """Our layout on a (height, width) canvas, row-major; tiles are min(tile, side) pixels (`axis_starts`)."""
    tops = axis_starts(height, tile, overlap, align)
    lefts = axis_starts(width, tile, overlap, align)
    return _grid(tops, lefts, min(tile, height), min(tile, width))


def cheapest_side(length: int, max_tile: int, overlap: int, multiple: int = 1) -> int:
    """The tile side for one axis of `length` pixels: `length` itself when it is at most `max_tile`, else the
    multiple of `multiple` up to `max_tile` whose layout (`axis_starts`, neighbours overlapping by at least
    `overlap`) covers the fewest pixels, tiles × side. That is the least work for a network whose cost is
    linear in pixels (the denoiser: convolutions and windowed attention; `cost.unet_flops`). Ties go to
    the larger side (fewer calls). E.g. 512 pixels, tiles up to 256, overlap 32: 3 × 192 = 576 pixels
    (three 256-pixel tiles would cover 768). UsageError when no allowed side exceeds the overlap."""
    if length <= max_tile:
        return length
    sides = [side for side in range(multiple, max_tile + 1, multiple) if side > overlap]
    if not sides:
        raise UsageError(f"tile size {max_tile} must exceed the overlap {overlap} by at least {multiple}")
    return min(sides, key=lambda side: (len(axis_starts(length, side, overlap)) * side, -side))


def plan_cheapest_tiles(
    height: int, width: int, max_tile: int, overlap: int, multiple: int = 1
) -> list[Tile]:
    """Our layout with the side of each axis chosen by `cheapest_side` (tiles up to `max_tile` pixels, sides
    multiples of `multiple`), row-major; every tile has the same (height, width), so tiles batch."""
    tile_height = cheapest_side(height, max_tile, overlap, multiple)
    tile_width = cheapest_side(width, max_tile, overlap, multiple)
    tops = axis_starts(height, tile_height, overlap)
    lefts = axis_starts(width, tile_width, overlap)
    return _grid(tops, lefts, tile_height, tile_width)


def official_tiles(height: int, width: int, patch: int, stride: int) -> list[Tile]:
    """The official chop layout on a (height, width) canvas, row-major; tiles are min(patch, side) pixels."""
    tops = official_axis_starts(height, patch, stride)
    lefts = official_axis_starts(width, patch, stride)
    return _grid(tops, lefts, min(patch, height), min(patch, width))


def ramp(length: int) -> Tensor:
    """Rising raised-cosine ramp, shape (length,) float64: sin²(π/2 · (k + ½) / length), k = 0 … length−1.

    Strictly increasing, in (0, 1), and `ramp(n) + ramp(n).flip(0) == 1`: a tile fading in and its
    neighbour fading out over the same pixels sum to one.
    """
    k = torch.arange(length, dtype=torch.float64)
    return torch.sin(math.pi / 2 * (k + 0.5) / length).square()


def _axis_windows(spans: Sequence[tuple[int, int]]) -> dict[tuple[int, int], Tensor]:
    """1-D windows, float64 in (0, 1], for each (start, end) span of a layout along one axis.

    A span ramps up over the pixels that spans starting earlier still cover, and ramps down from where
    the next later span starts; it is 1 elsewhere and on the canvas border sides (start 0, end extent).
    """
    unique = sorted(set(spans))
    extent = max(end for _, end in unique)
    windows = {}
    for start, end in unique:
        earlier_end = max((e for s, e in unique if s < start), default=start)
        later_start = min((s for s, _ in unique if s > start), default=end)
        rise = min(max(earlier_end - start, 0), end - start)
        fall = max(end - later_start, 0) if end < extent else 0
        window = torch.ones(end - start, dtype=torch.float64)
        window[:rise] *= ramp(rise)
        window[end - start - fall :] *= ramp(fall).flip(0)
        windows[start, end] = window
    return windows


def layout_weights(tiles: Sequence[Tile]) -> list[Tensor]:
    """Smooth blend weights for every tile of a layout: one (height, width) float32 map per tile, in (0, 1].

    Each map is the outer product of per-axis raised-cosine windows (see `_axis_windows`): 1 in the
    interior and on canvas border sides, ramping across overlaps with neighbours. Where at most two
    tiles overlap along each axis the maps of a grid sum to exactly 1; elsewhere the sum is positive and
    `Blender` divides by it, so the normalised weights always form a partition of unity.
    """
    rows = _axis_windows([(t.top, t.bottom) for t in tiles])
    cols = _axis_windows([(t.left, t.right) for t in tiles])
    return [torch.outer(rows[t.top, t.bottom], cols[t.left, t.right]).float() for t in tiles]


def blend_weights(tile: Tile, tiles: Sequence[Tile]) -> Tensor:
    """Smooth blend weights (tile.height, tile.width), float32 in (0, 1], of `tile` in the layout `tiles`."""
    return layout_weights([tile, *tiles])[0]


class Blender:
    """Canvas accumulator: `add` weighted tiles, `result` returns Σ w·v / Σ w per pixel."""

    def __init__(
        self,
        shape: tuple[int, int, int, int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """Canvas of shape (B, C, H, W) on `device`; sums are kept in `dtype`."""
        self._values = torch.zeros(shape, device=device, dtype=dtype)
        self._weights = torch.zeros((1, 1, *shape[2:]), device=device, dtype=dtype)

    def add(self, tile: Tile, values: Tensor, weight: Tensor | None = None) -> None:
        """Add `values` (B, C, tile.height, tile.width) at `tile` (in canvas pixels) times `weight`.

        `weight`: (h, w) or (1, 1, h, w), >= 0; None means 1 everywhere (uniform averaging, as the
        official chop does).
        """
        height, width = self._values.shape[-2:]
        if tile.top < 0 or tile.left < 0 or tile.bottom > height or tile.right > width:
            raise ValueError(f"{tile} does not lie inside the {height}×{width} canvas")
        rows, cols = tile.slices()
        target = self._values[..., rows, cols]
        if values.shape != target.shape:
            raise ValueError(f"tile values of shape {tuple(values.shape)} do not fit {tuple(target.shape)}")
        shape = (1, 1, tile.height, tile.width)
        weight = torch.ones(shape) if weight is None else weight.reshape(shape)
        weight = weight.to(device=target.device, dtype=target.dtype)
        target += values.to(target.dtype) * weight
        self._weights[..., rows, cols] += weight

    def result(self) -> Tensor:
        """The blended canvas (B, C, H, W) in the accumulator dtype; ValueError if a pixel got no weight."""
        uncovered = int((self._weights <= 0).sum())
        if uncovered:
            raise ValueError(f"{uncovered} canvas pixels are not covered by any tile")
        return self._values / self._weights


def context_window(tile: Tile, context: int, height: int, width: int) -> Tile:
    """The input read for `tile`: grown by `context` pixels on every side, then slid inside the canvas.

    Its sides are min(side + 2·context, canvas side), so all tiles of one size read windows of one
    size; at a border the window is shifted inwards (more context on the inner side), never padded.
    """
    top, window_height = _grow(tile.top, tile.height, context, height)
    left, window_width = _grow(tile.left, tile.width, context, width)
    return Tile(top, left, window_height, window_width)


def _grow(start: int, size: int, context: int, extent: int) -> tuple[int, int]:
    grown = min(size + 2 * context, extent)
    return min(max(start - context, 0), extent - grown), grown


def _batches(windows: Sequence[Tile], batch: int) -> Iterator[list[int]]:
    """Tile indices grouped by window size (groups, members in first-appearance order), `batch` at a time."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, window in enumerate(windows):
        groups.setdefault((window.height, window.width), []).append(index)
    for members in groups.values():
        for first in range(0, len(members), batch):
            yield members[first : first + batch]


def _run_batch(
    fn: Callable[..., Tensor], inputs: Sequence[Tensor], windows: list[Tile], scale: Scale
) -> Tensor:
    """fn over the windows of all inputs stacked tile-major: returns (n·B, C', h·scale, w·scale)."""
    stacks = [torch.cat([canvas[(..., *w.slices())] for w in windows]) for canvas in inputs]
    out = fn(*stacks)
    size = windows[0].scaled(scale)
    expected = (stacks[0].shape[0], size.height, size.width)
    if out.dim() != 4 or (out.shape[0], *out.shape[2:]) != expected:
        raise ValueError(f"tile function returned shape {tuple(out.shape)}; expected (n, C, h, w) {expected}")
    return out


def _check_inputs(inputs: Sequence[Tensor], tiles: Sequence[Tile], batch: int, context: int) -> None:
    shape = inputs[0].shape
    if any(t.dim() != 4 or (t.shape[0], *t.shape[2:]) != (shape[0], *shape[2:]) for t in inputs):
        shapes = [tuple(t.shape) for t in inputs]
        raise ValueError(f"inputs must be (B, C, H, W) with equal B, H and W; got {shapes}")
    if not tiles or batch < 1 or context < 0:
        raise ValueError(f"need tiles, batch >= 1 and context >= 0; got {len(tiles)}, {batch}, {context}")
    outside = [t for t in tiles if min(t.top, t.left) < 0 or t.bottom > shape[2] or t.right > shape[3]]
    if outside:
        raise ValueError(f"{outside[0]} does not lie inside the {shape[2]}×{shape[3]} canvas")


def tiled_map(
    fn: Callable[..., Tensor],
    x: Tensor,
    tiles: Sequence[Tile],
    scale: Scale = 1,
    *,
    extra: Sequence[Tensor] = (),
    batch: int = 1,
    weights: WeightKind = "smooth",
    context: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Apply `fn` to the canvas `x` tile by tile and blend: (B, C, H, W) → (B, C', H·scale, W·scale).

    1. Each tile's input window is `context_window(tile, context, H, W)`: the tile plus up to `context`
       input pixels of real neighbourhood per side, so the network sees context that is not blended.
    2. Tiles are grouped by window size and `batch` windows at a time are stacked tile-major along
       dim 0 (tile 0's B images, then tile 1's, …): `fn(x_windows, *extra_windows)` gets (n·B, C, h, w)
       crops of `x` and of each `extra` tensor (B, C_i, H, W) and must return (n·B, C', h·scale, w·scale).
    3. The part of each output belonging to the tile (context cropped off) is added to a `Blender` on the
       output canvas with smooth `layout_weights` of the scaled layout, or weight 1 for "uniform"
       (the official chop: sum / count). `on_batch(tiles done, tiles total)` is called after each batch.
    Every window side × `scale` must be a whole number of pixels (ValueError). The result dtype is
    fn's output dtype promoted to at least float32; its device is fn's output device.
    """
    if weights not in ("smooth", "uniform"):
        raise ValueError(f"weights must be 'smooth' or 'uniform', not {weights!r}")
    inputs = (x, *extra)
    _check_inputs(inputs, tiles, batch, context)
    windows = [context_window(t, context, x.shape[2], x.shape[3]) for t in tiles]
    out_tiles = [t.scaled(scale) for t in tiles]
    tile_weights = layout_weights(out_tiles) if weights == "smooth" else [None] * len(tiles)
    batches = _outputs(fn, inputs, windows, batch, scale)
    first = next(batches)
    blender = _output_blender(first[2][0], Tile(0, 0, x.shape[2], x.shape[3]).scaled(scale))
    for done, members, outputs in itertools.chain([first], batches):
        for i, out in zip(members, outputs, strict=True):
            inner = Tile(tiles[i].top - windows[i].top, tiles[i].left - windows[i].left, *tiles[i].size)
            blender.add(out_tiles[i], out[(..., *inner.slices(scale))], tile_weights[i])
        if on_batch is not None:
            on_batch(done, len(tiles))
    return blender.result()


def _outputs(
    fn: Callable[..., Tensor], inputs: Sequence[Tensor], windows: list[Tile], batch: int, scale: Scale
) -> Iterator[tuple[int, list[int], tuple[Tensor, ...]]]:
    """Per batch: (tiles done so far, tile indices, one (B, C', h·scale, w·scale) output per tile)."""
    done = 0
    for members in _batches(windows, batch):
        out = _run_batch(fn, inputs, [windows[i] for i in members], scale)
        done += len(members)
        yield done, members, out.split(inputs[0].shape[0])


def _output_blender(sample: Tensor, canvas: Tile) -> Blender:
    """A Blender for outputs like `sample` (B, C', h, w) on the output canvas, summing in >= float32."""
    shape = (sample.shape[0], sample.shape[1], canvas.height, canvas.width)
    return Blender(shape, sample.device, torch.promote_types(sample.dtype, torch.float32))
