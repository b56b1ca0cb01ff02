"""The one region implementation: tiles of one level assembled into pixels of any box of that
level, optionally resampled to an output size. The tile server (thumbnails, Deep Zoom levels
between native ones) and the patch pipeline (level-0-anchored patches, exact target mpp) both
read through it.

Tiles are fetched concurrently (``prefetch_tiles``: exact, coalesced ranges), then decoded; a
JPEG tile is decoded at 1/2, 1/4 or 1/8 scale (DCT scaling) when the output is that much
smaller and ``dct_scaling`` allows it, so memory and time follow the output size. Pixels
outside the level are white (255)."""

from __future__ import annotations

import math

from PIL import Image

from ..errors import InvalidParameter
from .reader import SlideReader

MAX_OUTPUT_PIXELS = 16 * 1024 * 1024
MAX_CANVAS_PIXELS = 64 * 1024 * 1024
WHITE = (255, 255, 255)


def render_region(slide: SlideReader, level: int, x: float, y: float, width: float,
                  height: float, out_size: tuple[int, int], *,
                  resample: Image.Resampling = Image.Resampling.LANCZOS,
                  dct_scaling: bool = True) -> Image.Image:
    """RGB pixels of ``[x, x+width) x [y, y+height)`` of ``level`` (level coordinates, may be
    fractional or outside the level) resampled to ``out_size`` with ``resample``. An
    integer-aligned box of exactly ``out_size`` is copied without resampling. Raises
    ``InvalidParameter`` for an empty or oversized output or source box."""
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
    x0 = min(info.tiles_x - 1, max(0, math.floor(x)) // tw)
    y0 = min(info.tiles_y - 1, max(0, math.floor(y)) // th)
    x1 = min(info.tiles_x - 1, max(0, math.ceil(x + width) - 1) // tw)
    y1 = min(info.tiles_y - 1, max(0, math.ceil(y + height) - 1) // th)
    left, top = min(x0 * tw, math.floor(x)), min(y0 * th, math.floor(y))
    canvas_w = math.ceil((max((x1 + 1) * tw, x + width) - left) / reduce) + 1
    canvas_h = math.ceil((max((y1 + 1) * th, y + height) - top) / reduce) + 1
    if canvas_w * canvas_h > MAX_CANVAS_PIXELS:
        raise InvalidParameter(f"region {width:.0f}x{height:.0f} of level {level} is too large")
    canvas = Image.new("RGB", (canvas_w, canvas_h), WHITE)
    tiles = [(tx, ty) for ty in range(y0, y1 + 1) for tx in range(x0, x1 + 1)]
    slide.prefetch_tiles(level, tiles)
    target = (math.ceil(tw / reduce), math.ceil(th / reduce))
    for tx, ty in tiles:
        raw = slide.read_raw_tile(level, tx, ty)
        tile = slide.decode_tile(level, raw, target if reduce > 1 else None)
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
    if all(float(v).is_integer() for v in box):
        crop = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
        size = (crop[2] - crop[0], crop[3] - crop[1])
        if size == (out_w, out_h):
            return canvas.crop(crop)
        factor = size[0] // out_w
        if (resample == Image.Resampling.BOX and factor > 1
                and size == (out_w * factor, out_h * factor)):
            return canvas.crop(crop).reduce(factor)  # the same area average, much faster
    return canvas.resize((out_w, out_h), resample, box=box)


def read_region(slide: SlideReader, level: int, x: int, y: int, width: int,
                height: int) -> Image.Image:
    """RGB pixels of ``[x, x + width) x [y, y + height)`` in ``level``'s integer
    coordinates, unscaled; parts outside the level are white."""
    if width <= 0 or height <= 0 or width * height > MAX_CANVAS_PIXELS:
        raise InvalidParameter(f"region {width}x{height} is empty or too large")
    return render_region(slide, level, x, y, width, height, (width, height))


def read_level0_anchored(slide: SlideReader, x0: int, y0: int, level: int, width: int,
                         height: int, out_size: tuple[int, int] | None = None, *,
                         dct_scaling: bool = False) -> Image.Image:
    """OpenSlide's convention: the top left is given in level-0 pixels, ``width x height``
    in ``level`` pixels. With ``out_size`` the region is resampled to it with an area
    (antialiasing) filter when shrinking and bicubic when enlarging. White outside."""
    ds = slide.level(level).downsample
    out = out_size or (width, height)
    shrink = out[0] < width or out[1] < height
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
    return render_region(slide, level, x0 / ds, y0 / ds, width, height, out,
                         resample=resample, dct_scaling=dct_scaling)
