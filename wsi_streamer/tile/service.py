"""The tile service: validated requests in, encoded JPEG out, through the shared tile cache.

Every image goes cache -> (per-process singleflight) -> registry -> decode -> encode -> cache,
so concurrent requests for one cold image cost one source read per process, and a tile made
by one gunicorn worker is a cache hit in the others."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import TileOutOfBounds
from ..io.singleflight import SingleFlight
from ..slide.reader import SlideReader
from ..slide.region import render_region
from ..slide.registry import SlideRegistry
from .cache import TileCache
from .dzi import DeepZoom
from .encoder import encode_jpeg

THUMBNAIL_MIN, THUMBNAIL_MAX = 64, 2048


@dataclass(frozen=True, slots=True)
class ImageResult:
    """An encoded image, or only its ETag when the client's copy is current (``data`` None)."""

    data: bytes | None
    etag: str
    cache_hit: bool
    quality: int


@dataclass
class TileStats:
    rendered: int = 0
    cache_hits: int = 0
    cache_misses: int = 0


def etag_of(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


class TileService:
    def __init__(self, registry: SlideRegistry, cache: TileCache, *, default_quality: int = 80,
                 tile_size: int = 254, overlap: int = 1) -> None:
        self.registry = registry
        self.cache = cache
        self.default_quality = default_quality
        self.dzi_tile_size, self.dzi_overlap = tile_size, overlap
        self.stats = TileStats()
        self._stats_lock = threading.Lock()
        self._flights: SingleFlight[bytes] = SingleFlight()

    def slide(self, slide_id: str) -> SlideReader:
        return self.registry.get(slide_id)

    def _image(self, key: str, quality: int, if_none_match: str | None,
               produce: Callable[[], bytes]) -> ImageResult:
        etag = etag_of(key)
        if if_none_match is not None and _etags(if_none_match) & {etag, "*"}:
            return ImageResult(None, etag, True, quality)
        data = self.cache.get(key)
        if data is not None:
            self._count(hit=True)
            return ImageResult(data, etag, True, quality)

        def render() -> bytes:
            again = self.cache.get(key)  # another process may have finished meanwhile
            if again is not None:
                return again
            with self._stats_lock:
                self.stats.rendered += 1
            encoded = produce()
            self.cache.set(key, encoded)
            return encoded

        data, shared = self._flights.do(key, render)
        self._count(hit=False)
        return ImageResult(data, etag, shared, quality)

    def _count(self, hit: bool) -> None:
        with self._stats_lock:
            if hit:
                self.stats.cache_hits += 1
            else:
                self.stats.cache_misses += 1

    def tile(self, slide_id: str, level: int, x: int, y: int, quality: int | None = None,
             if_none_match: str | None = None) -> ImageResult:
        """Native tile (x, y) of ``level``; ``InvalidLevel``/``TileOutOfBounds`` when outside."""
        q = self.default_quality if quality is None else quality
        slide = self.slide(slide_id)
        info = slide.level(level)
        if not (0 <= x < info.tiles_x and 0 <= y < info.tiles_y):
            raise TileOutOfBounds(level, x, y, info.tiles_x, info.tiles_y)
        key = f"tile:{slide.identity}:{level}:{x}:{y}:q{q}"
        return self._image(key, q, if_none_match,
                           lambda: encode_jpeg(slide.read_tile(level, x, y), q))

    def deep_zoom(self, slide: SlideReader) -> DeepZoom:
        width, height = slide.dimensions
        return DeepZoom(width, height, self.dzi_tile_size, self.dzi_overlap)

    def dzi_descriptor(self, slide_id: str) -> str:
        return self.deep_zoom(self.slide(slide_id)).descriptor()

    def dzi_tile(self, slide_id: str, dz_level: int, col: int, row: int,
                 quality: int | None = None, if_none_match: str | None = None) -> ImageResult:
        """A Deep Zoom tile rendered from the best native level for its scale."""
        q = self.default_quality if quality is None else quality
        slide = self.slide(slide_id)
        dz = self.deep_zoom(slide)
        x, y, w, h = dz.tile_bounds(dz_level, col, row)
        key = f"dzi:{slide.identity}:{dz.tile_size}:{dz.overlap}:{dz_level}:{col}:{row}:q{q}"

        def produce() -> bytes:
            scale = dz.scale(dz_level)
            native = slide.level(slide.best_level_for_downsample(scale))
            base_w, base_h = slide.dimensions
            sx, sy = scale * native.width / base_w, scale * native.height / base_h
            image = render_region(slide, native.level, x * sx, y * sy, w * sx, h * sy, (w, h))
            return encode_jpeg(image, q)

        return self._image(key, q, if_none_match, produce)

    def thumbnail(self, slide_id: str, max_size: int, quality: int | None = None,
                  if_none_match: str | None = None) -> ImageResult:
        """The whole slide with its longest side ``max_size`` (already clamped by the caller,
        never upscaled), from the smallest level that is at least that large."""
        q = self.default_quality if quality is None else quality
        slide = self.slide(slide_id)
        width, height = slide.dimensions
        longest = min(max_size, max(width, height))
        out = (max(1, round(width * longest / max(width, height))),
               max(1, round(height * longest / max(width, height))))
        key = f"thumb:{slide.identity}:{out[0]}x{out[1]}:q{q}"

        def produce() -> bytes:
            candidates = [lv for lv in slide.levels if lv.width >= out[0] and lv.height >= out[1]]
            native = candidates[-1] if candidates else slide.levels[0]
            image = render_region(slide, native.level, 0, 0, native.width, native.height, out)
            return encode_jpeg(image, q)

        return self._image(key, q, if_none_match, produce)


def clamp_thumbnail_size(requested: int) -> int:
    return max(THUMBNAIL_MIN, min(THUMBNAIL_MAX, requested))


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/").strip('"') for part in header.split(",")}
