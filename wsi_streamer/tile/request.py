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
ORIGIN_ROUNDING = 0.5
"""Level-0 pixels a native tile's region origin may be from the request's when that origin is
fractional (a reduced level whose downsample is not an integer): the rounding of it."""
_EXACT = 1e-6  # float noise in level-0 pixels


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
    """``(level, x, y)`` when ``region`` at ``size`` is the stored tile ``(x, y)`` of
    ``level`` (cropped at the level's edge), else None; such a request is served from that
    tile, with no render. The tolerance absorbs only what integer level-0 coordinates cannot
    say: each side of ``region`` starts within ``ORIGIN_ROUNDING`` level-0 px of the tile's
    level-0 origin when that origin is fractional (exactly on it when it is an integer, as
    at level 0), and its length is within less than one level pixel (``1 / f`` level-0 px,
    ``f`` the level's size over level 0's) of the tile's level-0 length (exactly it at level
    0); ``size`` is the tile's own size."""
    rx, ry, rw, rh = region
    for info in levels:
        fx, fy = info.width / base[0], info.height / base[1]
        tx, ty = round(rx * fx / info.tile_width), round(ry * fy / info.tile_height)
        if not (0 <= tx < info.tiles_x and 0 <= ty < info.tiles_y):
            continue
        (x0, y0, w0, h0), tile_size = tile_region(info, base, tx, ty)
        if (size == tile_size and _origin_matches(rx, x0) and _origin_matches(ry, y0)
                and _length_matches(rw, w0, fx) and _length_matches(rh, h0, fy)):
            return info.level, tx, ty
    return None


def _origin_matches(requested: float, origin: float) -> bool:
    tolerance = _EXACT if abs(origin - round(origin)) <= _EXACT else ORIGIN_ROUNDING + _EXACT
    return abs(requested - origin) <= tolerance


def _length_matches(requested: float, length: float, factor: float) -> bool:
    """``factor``: level pixels per level-0 pixel (1 at level 0: exact)."""
    if abs(factor - 1) <= _EXACT:
        return abs(requested - length) <= _EXACT
    return abs(requested - length) < 1 / factor


def scaled_level_size(base: tuple[int, int], region: tuple[float, float, float, float],
                      size: tuple[int, int]) -> tuple[int, int]:
    """The size of the whole slide at the request's output scale (for overview use)."""
    return (math.ceil(base[0] * size[0] / region[2] - 1e-6),
            math.ceil(base[1] * size[1] / region[3] - 1e-6))
