"""The tile service: validated requests in, encoded JPEG out, through the shared tile cache.

Every image goes cache -> (per-process singleflight) -> registry -> decode -> encode -> cache,
so concurrent requests for one cold image cost one source read per process, and a tile made
by one gunicorn worker is a cache hit in the others.

Cost per request is bounded (``wsi_streamer.limits``): a slide larger than ``OVERVIEW_SIZE``
has one overview (``overview.OverviewStore``) from which every thumbnail and every Deep Zoom
level no larger than it is resampled; other renders decode at most ``MAX_TILES_PER_REQUEST``
tiles into at most ``SERVICE_CANVAS_PIXELS``; overview builds and renders of more than
``HEAVY_TILES`` tiles hold a slot of a per-process ``HeavyGate`` (503 when none frees in
time), native tiles never do."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from ..errors import TileOutOfBounds
from ..io.singleflight import SingleFlight
from ..limits import (
    HEAVY_TILES,
    MAX_OVERVIEW_TILES,
    MAX_TILES_PER_REQUEST,
    OVERVIEW_SIZE,
    SERVICE_CANVAS_PIXELS,
)
from ..slide.reader import SlideReader
from ..slide.region import region_tile_count, render_region
from ..slide.registry import SlideRegistry
from .cache import TileCache
from .dzi import DeepZoom
from .encoder import encode_jpeg
from .gate import HeavyGate
from .overview import OverviewStore, resample_box

THUMBNAIL_MIN, THUMBNAIL_MAX = 64, OVERVIEW_SIZE


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
    """Thread-safe. ``gate`` caps this process's heavy renders (a fresh ``HeavyGate`` with
    the ``limits`` defaults unless given)."""

    def __init__(self, registry: SlideRegistry, cache: TileCache, *, default_quality: int = 80,
                 tile_size: int = 254, overlap: int = 1, gate: HeavyGate | None = None,
                 overview_size: int = OVERVIEW_SIZE) -> None:
        self.registry = registry
        self.cache = cache
        self.default_quality = default_quality
        self.dzi_tile_size, self.dzi_overlap = tile_size, overlap
        self.stats = TileStats()
        self.gate = gate if gate is not None else HeavyGate()
        self.overviews = OverviewStore(cache, self.gate, size=overview_size)
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
        """Native tile (x, y) of ``level``; ``InvalidLevel``/``TileOutOfBounds`` when outside.
        Like every image here, read through ``registry.using``: a slide replaced in storage
        is reopened and the read retried once, so the new content is served at once."""
        return self.registry.using(slide_id, lambda slide: self._tile(
            slide, level, x, y, quality, if_none_match))

    def _tile(self, slide: SlideReader, level: int, x: int, y: int, quality: int | None,
              if_none_match: str | None) -> ImageResult:
        q = self.default_quality if quality is None else quality
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
        return self.registry.using(slide_id, lambda slide: self.deep_zoom(slide).descriptor())

    def dzi_tile(self, slide_id: str, dz_level: int, col: int, row: int,
                 quality: int | None = None, if_none_match: str | None = None) -> ImageResult:
        """A Deep Zoom tile rendered from the best native level for its scale."""
        return self.registry.using(slide_id, lambda slide: self._dzi_tile(
            slide, dz_level, col, row, quality, if_none_match))

    def _dzi_tile(self, slide: SlideReader, dz_level: int, col: int, row: int,
                  quality: int | None, if_none_match: str | None) -> ImageResult:
        q = self.default_quality if quality is None else quality
        dz = self.deep_zoom(slide)
        x, y, w, h = dz.tile_bounds(dz_level, col, row)
        key = f"dzi:{slide.identity}:{dz.tile_size}:{dz.overlap}:{dz_level}:{col}:{row}:q{q}"

        def produce() -> bytes:
            scale = dz.scale(dz_level)
            base_w, base_h = slide.dimensions
            overview = self.overviews.geometry(slide)
            level_w, level_h = dz.level_size(dz_level)
            if overview is not None and level_w <= overview[0] and level_h <= overview[1]:
                fx, fy = scale * overview[0] / base_w, scale * overview[1] / base_h
                image = resample_box(self.overviews.get(slide),
                                     (x * fx, y * fy, (x + w) * fx, (y + h) * fy), (w, h))
                return encode_jpeg(image, q)
            native = slide.level(slide.best_level_for_downsample(scale))
            sx, sy = scale * native.width / base_w, scale * native.height / base_h
            image = self._render(slide, native.level, (x * sx, y * sy, w * sx, h * sy), (w, h),
                                 MAX_TILES_PER_REQUEST, f"Deep Zoom tile {dz_level}/{col}_{row}")
            return encode_jpeg(image, q)

        return self._image(key, q, if_none_match, produce)

    def thumbnail(self, slide_id: str, max_size: int, quality: int | None = None,
                  if_none_match: str | None = None) -> ImageResult:
        """The whole slide with its longest side ``max_size`` (already clamped by the caller,
        never upscaled): resampled from the slide's overview when it has one, else from the
        smallest level that is at least that large."""
        return self.registry.using(slide_id, lambda slide: self._thumbnail(
            slide, max_size, quality, if_none_match))

    def _thumbnail(self, slide: SlideReader, max_size: int, quality: int | None,
                   if_none_match: str | None) -> ImageResult:
        q = self.default_quality if quality is None else quality
        width, height = slide.dimensions
        longest = min(max_size, max(width, height))
        out = (max(1, round(width * longest / max(width, height))),
               max(1, round(height * longest / max(width, height))))
        key = f"thumb:{slide.identity}:{out[0]}x{out[1]}:q{q}"

        def produce() -> bytes:
            overview = self.overviews.geometry(slide)
            if overview is not None and out[0] <= overview[0] and out[1] <= overview[1]:
                image = self.overviews.get(slide)
                if image.size != out:
                    image = image.resize(out, Image.Resampling.LANCZOS)
                return encode_jpeg(image, q)
            candidates = [lv for lv in slide.levels if lv.width >= out[0] and lv.height >= out[1]]
            native = candidates[-1] if candidates else slide.levels[0]
            image = self._render(slide, native.level, (0, 0, native.width, native.height), out,
                                 MAX_OVERVIEW_TILES, "thumbnail")
            return encode_jpeg(image, q)

        return self._image(key, q, if_none_match, produce)

    def _render(self, slide: SlideReader, level: int, box: tuple[float, float, float, float],
                out: tuple[int, int], max_tiles: int, what: str) -> Image.Image:
        """``render_region`` within the service's bounds; in a gate slot when heavy."""
        x, y, w, h = box
        info = slide.level(level)

        def render() -> Image.Image:
            return render_region(slide, level, x, y, w, h, out, max_tiles=max_tiles,
                                 max_canvas=SERVICE_CANVAS_PIXELS)

        if region_tile_count(info, x, y, w, h) <= HEAVY_TILES:
            return render()
        with self.gate.slot(f"{what} of {slide.identity}"):
            return render()


def clamp_thumbnail_size(requested: int) -> int:
    return max(THUMBNAIL_MIN, min(THUMBNAIL_MAX, requested))


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/").strip('"') for part in header.split(",")}
