"""The one region implementation: tiles of one level assembled into pixels of any box of that
level, optionally resampled to an output size. The tile server (thumbnails, Deep Zoom levels
between native ones) and the patch pipeline (level-0-anchored patches, exact target mpp) both
read through it.

Tiles are fetched together (``read_raw_tiles``: exact, coalesced ranges), then decoded; a
JPEG tile is decoded at 1/2, 1/4 or 1/8 scale (DCT scaling) when the output is that much
smaller and ``dct_scaling`` allows it, so memory and time follow the output size. Pixels
outside the level are white (255).

``render_overview`` makes a small image of a whole level with bounded memory: each tile is
reduced by a power of two while decoding (DCT scaling, then exact integer box reductions;
tile sides are multiples of 16) before it is pasted, so the canvas is under twice the output
per side whatever the level's size."""

from __future__ import annotations

import math
from collections.abc import Iterator

from PIL import Image

from ..budget import checkpoint
from ..errors import InvalidParameter, LimitExceeded
from ..format.info import LevelGeometry
from ..limits import MAX_CANVAS_PIXELS, MAX_OUTPUT_PIXELS, OVERVIEW_FETCH_TILES
from .reader import SlideReader

WHITE = (255, 255, 255)
DCT_MAX = 8  # libjpeg scales by 1/2, 1/4 or 1/8 while decoding


def decoded_bytes(image: Image.Image) -> int:
    """What a decoded tile counts against its budget's ``MAX_DECODED_BYTES``."""
    return image.width * image.height * len(image.getbands())


def _canvas(size: tuple[int, int]) -> Image.Image:
    """A white RGB canvas (every canvas of this module is made here: tests count them)."""
    return Image.new("RGB", size, WHITE)


def _assembly(size: tuple[int, int]) -> Image.Image:
    """An RGB canvas left uninitialised, for a box its tiles cover whole (tests count them)."""
    return Image.new("RGB", size, None)


def tile_span(info: LevelGeometry, x: float, y: float, width: float, height: float
              ) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: the inclusive tile columns and rows of ``level`` that the box
    ``[x, x+width) x [y, y+height)`` (level pixels) touches, clamped to the grid."""
    tw, th = info.tile_width, info.tile_height
    x0 = min(info.tiles_x - 1, max(0, math.floor(x)) // tw)
    y0 = min(info.tiles_y - 1, max(0, math.floor(y)) // th)
    x1 = min(info.tiles_x - 1, max(0, math.ceil(x + width) - 1) // tw)
    y1 = min(info.tiles_y - 1, max(0, math.ceil(y + height) - 1) // th)
    return x0, y0, x1, y1


def region_tile_count(info: LevelGeometry, x: float, y: float, width: float, height: float
                      ) -> int:
    """Tiles ``render_region`` decodes for this box (0 when it misses the level)."""
    if x >= info.width or y >= info.height or x + width <= 0 or y + height <= 0:
        return 0
    x0, y0, x1, y1 = tile_span(info, x, y, width, height)
    return (x1 - x0 + 1) * (y1 - y0 + 1)


def render_region(slide: SlideReader, level: int, *, x: float, y: float, width: float,
                  height: float, out_size: tuple[int, int],
                  resample: Image.Resampling = Image.Resampling.LANCZOS,
                  dct_scaling: bool = True, max_tiles: int | None = None,
                  max_canvas: int = MAX_CANVAS_PIXELS) -> Image.Image:
    """RGB pixels of ``[x, x+width) x [y, y+height)`` of ``level`` (level coordinates, may be
    fractional or outside the level) resampled to ``out_size`` with ``resample``. An
    integer-aligned box of exactly ``out_size`` is copied without resampling.

    Raises, before reading: ``InvalidParameter`` for an empty or oversized output, or a
    source box that alone would exceed ``max_canvas`` pixels (the caller asked for too much);
    ``LimitExceeded("max_canvas")`` when the box fits but the whole tiles it touches do not
    (the file's tiles are too large: 415, not the client's fault); and
    ``LimitExceeded("MAX_TILES_PER_REQUEST")`` when it would decode more than ``max_tiles``
    tiles (the file's levels or tiles are too small for the request).
    Memory: the canvas (at most ``max_canvas`` px) plus the output and one decoded tile."""
    out_w, out_h = out_size
    if out_w <= 0 or out_h <= 0 or out_w * out_h > MAX_OUTPUT_PIXELS:
        raise InvalidParameter(f"output size {out_w}x{out_h} is empty or too large")
    if not (width > 0 and height > 0):
        raise InvalidParameter(f"region {width}x{height} is empty")
    info = slide.level(level)
    if x >= info.width or y >= info.height or x + width <= 0 or y + height <= 0:
        return Image.new("RGB", (out_w, out_h), WHITE)
    scale = min(width / out_w, height / out_h)
    reduce = 1
    while dct_scaling and reduce < 8 and reduce * 2 <= scale:
        reduce *= 2
    tw, th = info.tile_width, info.tile_height
    x0, y0, x1, y1 = tile_span(info, x, y, width, height)
    count = (x1 - x0 + 1) * (y1 - y0 + 1)
    if max_tiles is not None and count > max_tiles:
        raise LimitExceeded("MAX_TILES_PER_REQUEST", f"a {width:.0f}x{height:.0f} px region "
                            f"of level {level} needs {count} of its {tw}x{th} px tiles, more "
                            f"than {max_tiles}: the slide has no level small enough for it")
    left, top = min(x0 * tw, math.floor(x)), min(y0 * th, math.floor(y))
    # Up to the last tile or the level's edge (whichever is nearer), or the box's end.
    canvas_w = math.ceil((max(min((x1 + 1) * tw, info.width), x + width) - left) / reduce) + 1
    canvas_h = math.ceil((max(min((y1 + 1) * th, info.height), y + height) - top) / reduce) + 1
    if canvas_w * canvas_h > max_canvas:
        if (math.ceil(width / reduce) + 2) * (math.ceil(height / reduce) + 2) > max_canvas:
            raise InvalidParameter(f"region {width:.0f}x{height:.0f} of level {level} is "
                                   "too large")
        # The box fits; the whole tiles it touches do not: the file's tiles are too large.
        raise LimitExceeded("max_canvas", f"a {width:.0f}x{height:.0f} px region of level "
                            f"{level} needs its {tw}x{th} px tiles decoded whole "
                            f"({canvas_w}x{canvas_h} px, more than {max_canvas})")
    tiles = [(tx, ty) for ty in range(y0, y1 + 1) for tx in range(x0, x1 + 1)]
    target = (math.ceil(tw / reduce), math.ceil(th / reduce))
    decoded = slide.tile_images(level, tiles, target if reduce > 1 else None)
    box = (x / reduce, y / reduce, (x + width) / reduce, (y + height) / reduce)
    if (x >= 0 and y >= 0 and x + width <= info.width and y + height <= info.height
            and tw % reduce == 0 and th % reduce == 0 and _tight_fits(box, out_size, resample)):
        return _tight(tiles, decoded, (tw // reduce, th // reduce), target, box, out_size,
                      resample)
    canvas = _canvas((canvas_w, canvas_h))
    for (tx, ty), tile in zip(tiles, decoded, strict=True):
        checkpoint(decoded_bytes(tile))  # the request's (or the open's) budget, each tile
        if tile.size != target:
            tile = tile.resize(target, Image.Resampling.BOX)
        canvas.paste(tile, ((tx * tw - left) // reduce, (ty * th - top) // reduce))
    # White beyond the level's right and bottom edges (edge tiles are padded).
    right = math.ceil((info.width - left) / reduce)
    bottom = math.ceil((info.height - top) / reduce)
    if right < canvas.width:
        canvas.paste(WHITE, (right, 0, canvas.width, canvas.height))
    if bottom < canvas.height:
        canvas.paste(WHITE, (0, bottom, canvas.width, canvas.height))
    box = ((x - left) / reduce, (y - top) / reduce,
           (x + width - left) / reduce, (y + height - top) / reduce)
    return _finish(canvas, box, (out_w, out_h), resample)


def _finish(canvas: Image.Image, box: tuple[float, float, float, float],
            out: tuple[int, int], resample: Image.Resampling) -> Image.Image:
    """``box`` of ``canvas`` at ``out``: the canvas itself, a crop, an exact integer
    reduction (BOX) or a resampling."""
    if all(float(v).is_integer() for v in box):
        crop = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
        size = (crop[2] - crop[0], crop[3] - crop[1])
        if size == out:
            return canvas if crop == (0, 0, *canvas.size) else canvas.crop(crop)
        factor = size[0] // out[0]
        if (resample == Image.Resampling.BOX and factor > 1
                and size == (out[0] * factor, out[1] * factor)):
            whole = canvas if crop == (0, 0, *canvas.size) else canvas.crop(crop)
            return whole.reduce(factor)  # the same area average, much faster
    return canvas.resize(out, resample, box=box)


def _tight_fits(box: tuple[float, float, float, float], out: tuple[int, int],
                resample: Image.Resampling) -> bool:
    """Whether a canvas of only ``box`` gives the whole-tile canvas's pixels: a copy, or the
    BOX filter (its windows stay inside the box; wider filters see the pixels around it)."""
    if resample == Image.Resampling.BOX:
        return True
    return (all(float(v).is_integer() for v in box)
            and (box[2] - box[0], box[3] - box[1]) == out)


def _tight(tiles: list[tuple[int, int]], decoded: Iterator[Image.Image],
           step: tuple[int, int], target: tuple[int, int],
           box: tuple[float, float, float, float], out: tuple[int, int],
           resample: Image.Resampling) -> Image.Image:
    """A box inside the level, in (reduced) level pixels: its tiles pasted into a canvas of
    exactly the box rounded out (not whitened: the tiles cover it), then ``_finish``."""
    left, top = math.floor(box[0]), math.floor(box[1])
    canvas = _assembly((math.ceil(box[2]) - left, math.ceil(box[3]) - top))
    for (tx, ty), tile in zip(tiles, decoded, strict=True):
        checkpoint(decoded_bytes(tile))
        if tile.size != target:
            tile = tile.resize(target, Image.Resampling.BOX)
        canvas.paste(tile, (tx * step[0] - left, ty * step[1] - top))
    return _finish(canvas, (box[0] - left, box[1] - top, box[2] - left, box[3] - top), out,
                   resample)


def read_region(slide: SlideReader, level: int, *, x: int, y: int, width: int,
                height: int) -> Image.Image:
    """RGB pixels of ``[x, x + width) x [y, y + height)`` in ``level``'s integer
    coordinates, unscaled; parts outside the level are white."""
    if width <= 0 or height <= 0 or width * height > MAX_CANVAS_PIXELS:
        raise InvalidParameter(f"region {width}x{height} is empty or too large")
    return render_region(slide, level, x=x, y=y, width=width, height=height,
                         out_size=(width, height))


def read_level0_anchored(slide: SlideReader, level: int, *, x0: int, y0: int, width: int,
                         height: int, out_size: tuple[int, int] | None = None,
                         dct_scaling: bool = False) -> Image.Image:
    """OpenSlide's convention: the top left is given in level-0 pixels, ``width x height``
    in ``level`` pixels. With ``out_size`` the region is resampled to it with an area
    (antialiasing) filter when shrinking and bicubic when enlarging. White outside.

    With ``dct_scaling``, a read whose ``out_size`` is 1/2, 1/4 or 1/8 of the box
    (``dct_factor``) and whose origin lies on that factor's grid of the level
    (``dct_origin``) is decoded at that scale in the DCT domain: the area filter's pixels
    (within JPEG's own error: >= 45 dB against the exact box average) at the decoder's cost.
    Any other read is the exact area filter: the origin is never moved."""
    ds = slide.level(level).downsample
    out = out_size or (width, height)
    factor = dct_factor(width, height, out) if dct_scaling else 1
    if factor > 1 and dct_origin(ds, x0, y0, factor) == (x0, y0):
        return render_region(slide, level, x=round(x0 / ds), y=round(y0 / ds), width=width,
                             height=height, out_size=out, resample=Image.Resampling.BOX,
                             dct_scaling=True)
    shrink = out[0] < width or out[1] < height
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
    return render_region(slide, level, x=x0 / ds, y=y0 / ds, width=width, height=height,
                         out_size=out, resample=resample, dct_scaling=False)


def dct_factor(width: int, height: int, out_size: tuple[int, int]) -> int:
    """2, 4 or 8 when ``out_size`` is exactly that fraction of ``width x height`` (a read
    libjpeg can scale while decoding), else 1."""
    factor = width // out_size[0] if out_size[0] > 0 else 0
    if factor in (2, 4, 8) and (width, height) == (out_size[0] * factor, out_size[1] * factor):
        return factor
    return 1


def dct_origin(downsample: float, x0: int, y0: int, factor: int) -> tuple[int, int]:
    """The level-0 top left at or before ``(x0, y0)`` whose level coordinates (level-0 /
    ``downsample``) are multiples of ``factor``: where a read of ``factor`` x fewer pixels than
    its box is decoded in the DCT domain (``read_level0_anchored``). A sampler that wants that
    cost moves its draw there and reports the result (nothing else moves it). Exact to the
    level-0 pixel: a point within half a level-0 pixel of the grid is on it."""
    def snap(v: int) -> int:
        on = round(v / downsample / factor) * factor
        if abs(on * downsample - v) <= 0.5:
            return v
        return round(math.floor(v / downsample / factor) * factor * downsample)
    return snap(x0), snap(y0)


def overview_factor(info: LevelGeometry, out_size: tuple[int, int]) -> int:
    """The power of two ``render_overview`` reduces ``level``'s tiles by: the largest that
    keeps the level at least ``out_size`` and divides both tile sides (16 at least for TIFF
    6.0 tiles)."""
    scale = min(info.width / out_size[0], info.height / out_size[1])
    factor = 1
    while (factor * 2 <= scale and info.tile_width % (factor * 2) == 0
           and info.tile_height % (factor * 2) == 0):
        factor *= 2
    return factor


def overview_level(slide: SlideReader, size: tuple[int, int], fill: float = 1.0) -> int:
    """The level ``render_overview`` reads for an image of ``size``: the smallest at least
    that large on both sides, or (``render_overview``'s ``fill``) between ``fill`` of it and
    it on both sides; level 0 when none is."""
    fits = [lv.level for lv in slide.levels
            if (lv.width >= size[0] and lv.height >= size[1])
            or (fill * size[0] <= lv.width <= size[0] and fill * size[1] <= lv.height <= size[1])]
    return fits[-1] if fits else 0


def fitting_factor(info: LevelGeometry, out_size: tuple[int, int], fill: float) -> int | None:
    """The power of two (dividing both tile sides) by which the level reduced, whole pixels
    only, lies between ``fill`` x ``out_size`` and ``out_size`` on both sides: an overview of
    that size needs no resampling. None when there is none."""
    factor = 1
    while True:
        width, height = info.width // factor, info.height // factor
        if width <= out_size[0] and height <= out_size[1]:
            if width >= fill * out_size[0] and height >= fill * out_size[1]:
                return factor
            return None
        factor *= 2
        if info.tile_width % factor or info.tile_height % factor:
            return None


def render_overview(slide: SlideReader, level: int, out_size: tuple[int, int], *,
                    max_tiles: int, max_canvas: int,
                    resample: Image.Resampling = Image.Resampling.LANCZOS,
                    fill: float = 1.0) -> Image.Image:
    """The whole of ``level`` resampled (Lanczos, or ``resample``: BOX for an area average,
    e.g. a thumbnail for tissue detection) to ``out_size``, which must not be larger.

    With ``fill`` < 1 the image may be smaller than ``out_size``, down to ``fill`` of it on
    each side: when ``level`` reduced by a power of two (``fitting_factor``) lands in that
    range, that reduction (whole pixels: a partial last column or row is left out) is the
    image, exact area averages with no resampling; otherwise the image is ``out_size`` as
    with ``fill`` 1. The caller reads the scale from the image's size.

    Every tile is decoded once, reduced by ``overview_factor`` while decoding (JPEG: DCT
    scaling up to 1/8, then exact box reductions) and pasted, whole rows of tiles fetched
    together (``OVERVIEW_FETCH_TILES`` tiles at most, one row at least: one round of
    requests for a typical level). Raises ``LimitExceeded`` before reading when the level
    has more than ``max_tiles`` tiles (``MAX_OVERVIEW_TILES``) or the reduced level more
    than ``max_canvas`` pixels (``SERVICE_CANVAS_PIXELS``). Memory: the reduced level (under
    4x ``out_size`` when the tiles allow it) plus the output and the stored bytes of one
    fetch."""
    info = slide.level(level)
    out_w, out_h = out_size
    if not 0 < fill <= 1:
        raise InvalidParameter(f"overview fill {fill} is not in (0, 1]")
    exact = fitting_factor(info, out_size, fill) if fill < 1 and min(out_size) > 0 else None
    if exact is None and not (0 < out_w <= info.width and 0 < out_h <= info.height):
        raise InvalidParameter(f"overview {out_w}x{out_h} of a {info.width}x{info.height} level")
    if info.tile_count > max_tiles:
        raise LimitExceeded("MAX_OVERVIEW_TILES", f"a thumbnail of this slide needs all "
                            f"{info.tile_count} tiles of its {info.width}x{info.height} level "
                            f"{level}, more than {max_tiles}: the slide has no reduced level "
                            "small enough")
    factor = exact or overview_factor(info, out_size)
    canvas_w, canvas_h = math.ceil(info.width / factor), math.ceil(info.height / factor)
    if canvas_w * canvas_h > max_canvas:
        raise LimitExceeded("SERVICE_CANVAS_PIXELS", f"a thumbnail of this slide needs its "
                            f"{info.width}x{info.height} level {level} reduced only {factor}x "
                            f"({canvas_w}x{canvas_h} px, more than {max_canvas}): its tile "
                            f"sides ({info.tile_width}x{info.tile_height}) allow no more")
    tw, th = info.tile_width // factor, info.tile_height // factor
    reduce_to = (tw, th) if factor > 1 else None
    canvas = _canvas((canvas_w, canvas_h))
    rows = max(1, OVERVIEW_FETCH_TILES // info.tiles_x)  # rows of tiles fetched together
    for first in range(0, info.tiles_y, rows):
        batch = [(tx, ty) for ty in range(first, min(info.tiles_y, first + rows))
                 for tx in range(info.tiles_x)]
        for (tx, ty), tile in zip(batch, slide.tile_images(level, batch, reduce_to),
                                  strict=True):
            checkpoint(decoded_bytes(tile))
            if tile.size != (tw, th):
                k = tile.width // tw
                if k > 1 and tile.size == (tw * k, th * k):
                    tile = tile.reduce(k)  # the exact box average, from a 1/8 decode or a J2K
                else:
                    tile = tile.resize((tw, th), Image.Resampling.BOX)
            canvas.paste(tile, (tx * tw, ty * th))
    if exact is not None:
        whole = (info.width // factor, info.height // factor)
        return canvas if canvas.size == whole else canvas.crop((0, 0, *whole))
    box = (0.0, 0.0, info.width / factor, info.height / factor)
    if (canvas_w, canvas_h) == out_size and all(float(v).is_integer() for v in box):
        return canvas
    return canvas.resize(out_size, resample, box=box)
