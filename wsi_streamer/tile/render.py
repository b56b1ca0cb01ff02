"""Resampled views of a slide: a region of one level scaled to an output size, decoding each
tile at 1/2, 1/4 or 1/8 scale (JPEG DCT scaling) when the output is that much smaller, so
memory and time follow the output size, not the source size."""

from __future__ import annotations

import math

from PIL import Image

from ..errors import InvalidParameter
from ..slide.reader import SlideReader

MAX_OUTPUT_PIXELS = 16 * 1024 * 1024
MAX_CANVAS_PIXELS = 64 * 1024 * 1024


def render_region(slide: SlideReader, level: int, x: float, y: float, width: float,
                  height: float, out_size: tuple[int, int]) -> Image.Image:
    """Pixels of ``[x, x+width) x [y, y+height)`` of ``level`` (level coordinates, may be
    fractional) resampled to ``out_size``. Outside the level is white."""
    out_w, out_h = out_size
    if out_w <= 0 or out_h <= 0 or out_w * out_h > MAX_OUTPUT_PIXELS:
        raise InvalidParameter(f"output size {out_w}x{out_h} is empty or too large")
    info = slide.level(level)
    scale = min(width / out_w, height / out_h)
    reduce = 1
    while reduce < 8 and reduce * 2 <= scale:
        reduce *= 2
    tw, th = info.tile_width, info.tile_height
    x0, y0 = max(0, math.floor(x)) // tw, max(0, math.floor(y)) // th
    x1 = min(info.tiles_x - 1, math.ceil(x + width - 1) // tw)
    y1 = min(info.tiles_y - 1, math.ceil(y + height - 1) // th)
    left, top = x0 * tw, y0 * th
    canvas_w = math.ceil(max((x1 + 1) * tw, x + width) - left) // reduce + 1
    canvas_h = math.ceil(max((y1 + 1) * th, y + height) - top) // reduce + 1
    if canvas_w * canvas_h > MAX_CANVAS_PIXELS:
        raise InvalidParameter(f"region {width:.0f}x{height:.0f} of level {level} is too large")
    canvas = Image.new("RGB", (max(1, canvas_w), max(1, canvas_h)), (255, 255, 255))
    tiles = [(tx, ty) for ty in range(y0, y1 + 1) for tx in range(x0, x1 + 1)]
    if x < info.width and y < info.height and x + width > 0 and y + height > 0:
        slide.prefetch_tiles(level, tiles)
        for tx, ty in tiles:
            raw = slide.read_raw_tile(level, tx, ty)
            target = (math.ceil(tw / reduce), math.ceil(th / reduce))
            tile = slide.decode_tile(level, raw, target if reduce > 1 else None)
            if tile.size != target:
                tile = tile.resize(target, Image.Resampling.BOX)
            canvas.paste(tile, ((tx * tw - left) // reduce, (ty * th - top) // reduce))
        # White beyond the level's right and bottom edges (edge tiles are padded).
        right = math.ceil((info.width - left) / reduce)
        bottom = math.ceil((info.height - top) / reduce)
        if right < canvas.width:
            canvas.paste((255, 255, 255), (right, 0, canvas.width, canvas.height))
        if bottom < canvas.height:
            canvas.paste((255, 255, 255), (0, bottom, canvas.width, canvas.height))
    box = ((x - left) / reduce, (y - top) / reduce,
           (x + width - left) / reduce, (y + height - top) / reduce)
    return canvas.resize((out_w, out_h), Image.Resampling.LANCZOS, box=box)
