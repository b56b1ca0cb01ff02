"""What the image service makes: ``ImageRequest``, one window of a slide in level-0 pixels at
an output size, then mirrored, rotated, reduced to a quality and encoded in a format (the
order of the IIIF Image API). Native tiles, Deep Zoom tiles, thumbnails and IIIF requests are
all built as one of these; ``tile.service.TileService.image`` serves any of them.

Cache keys are a function of the request alone (plus the slide's identity), so two endpoints
asking for the same pixels share one cached image and one ETag."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..format.info import LevelGeometry

ROTATIONS = (0, 90, 180, 270)
QUALITIES = ("default", "color", "gray", "bitonal")
MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
NATIVE_TOLERANCE = 1.0  # level pixels a native tile's origin may differ from the request's


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """``region``: ``(x, y, width, height)`` in level-0 pixels, floats allowed (Deep Zoom
    levels between native ones), width and height > 0, inside the slide or partly outside
    (white there); ``size``: output ``(width, height)`` in pixels; ``rotation``: clockwise
    degrees, one of ``ROTATIONS``, applied after ``mirror`` (a horizontal flip); ``quality``:
    one of ``QUALITIES``; ``format``: a key of ``MEDIA_TYPES``; ``jpeg_quality`` 1-100 (also
    WebP's). ``max_tiles`` bounds the tiles one render may decode (None: the service's
    ``MAX_TILES_PER_REQUEST``; not part of the key)."""

    region: tuple[float, float, float, float]
    size: tuple[int, int]
    jpeg_quality: int
    rotation: int = 0
    mirror: bool = False
    quality: str = "default"
    format: str = "jpg"
    max_tiles: int | None = None
    what: str = "region"

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]

    @property
    def plain(self) -> bool:
        """No mirror, rotation, quality change; JPEG output."""
        return (self.rotation == 0 and not self.mirror and self.quality in ("default", "color")
                and self.format == "jpg")

    @property
    def output_size(self) -> tuple[int, int]:
        """The encoded image's size (rotation by 90 or 270 swaps the sides)."""
        w, h = self.size
        return (h, w) if self.rotation in (90, 270) else (w, h)

    def suffix(self) -> str:
        """The key part after the pixels: empty for a plain JPEG (so native tiles keep the
        keys they have always had)."""
        if self.plain:
            return f":q{self.jpeg_quality}"
        quality = "color" if self.quality == "default" else self.quality
        mirror = "!" if self.mirror else ""
        return f":r{mirror}{self.rotation}:{quality}:{self.format}:q{self.jpeg_quality}"


def tile_region(info: LevelGeometry, base: tuple[int, int], x: int, y: int
                ) -> tuple[tuple[float, float, float, float], tuple[int, int]]:
    """The level-0 region and output size of native tile ``(x, y)`` of ``info`` (cropped to
    the level), for a slide of ``base`` level-0 size."""
    fx, fy = base[0] / info.width, base[1] / info.height
    left, top = x * info.tile_width, y * info.tile_height
    w = min(info.tile_width, info.width - left)
    h = min(info.tile_height, info.height - top)
    return (left * fx, top * fy, w * fx, h * fy), (w, h)


def native_tile(levels: Sequence[LevelGeometry], base: tuple[int, int],
                region: tuple[float, float, float, float], size: tuple[int, int]
                ) -> tuple[int, int, int] | None:
    """``(level, x, y)`` when ``region`` at ``size`` is one native tile (cropped at the
    level's edge): the level's scale matches ``size / region`` within one pixel per side and
    the tile's origin is within ``NATIVE_TOLERANCE`` level pixels of the region's. Else
    None. Such a request is served from the stored tile, with no region render."""
    rx, ry, rw, rh = region
    for info in levels:
        fx, fy = info.width / base[0], info.height / base[1]
        lx, ly = rx * fx, ry * fy
        tx, ty = round(lx / info.tile_width), round(ly / info.tile_height)
        if not (0 <= tx < info.tiles_x and 0 <= ty < info.tiles_y):
            continue
        if (abs(lx - tx * info.tile_width) > NATIVE_TOLERANCE
                or abs(ly - ty * info.tile_height) > NATIVE_TOLERANCE):
            continue
        w = min(info.tile_width, info.width - tx * info.tile_width)
        h = min(info.tile_height, info.height - ty * info.tile_height)
        if size != (w, h):
            continue
        if abs(rw * fx - w) <= NATIVE_TOLERANCE + 1 and abs(rh * fy - h) <= NATIVE_TOLERANCE + 1:
            return info.level, tx, ty
    return None


def scaled_level_size(base: tuple[int, int], region: tuple[float, float, float, float],
                      size: tuple[int, int]) -> tuple[int, int]:
    """The size of the whole slide at the request's output scale (for overview use)."""
    return (math.ceil(base[0] * size[0] / region[2] - 1e-6),
            math.ceil(base[1] * size[1] / region[3] - 1e-6))
