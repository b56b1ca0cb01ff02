"""The image service: an ``ImageRequest`` (``tile.request``: a level-0 region at an output
size, mirrored, rotated, reduced to a quality, in a format) in, encoded bytes and their media
type out, through the shared tile cache. Native tiles, Deep Zoom tiles, thumbnails and IIIF
images are all request builders on ``image``; a request that is exactly one stored tile is
served from it (``stats.native``) with no region render.

Every image goes cache -> (per-process singleflight) -> registry -> decode -> encode -> cache,
so concurrent requests for one cold image cost one source read per process, and a tile made
by one gunicorn worker is a cache hit in the others.

Cost per request is bounded (``wsi_streamer.limits``): a slide larger than ``OVERVIEW_SIZE``
has one overview (``overview.OverviewStore``) from which every thumbnail and every Deep Zoom
level no larger than it is resampled; other renders decode at most ``MAX_TILES_PER_REQUEST``
tiles into at most ``SERVICE_CANVAS_PIXELS``; overview builds and renders of more than
``HEAVY_TILES`` tiles hold a slot of a per-process ``HeavyGate`` (503 when none frees in
time), native tiles never do.

Time is bounded by the caller's ``budget`` (one per request): each tile decoded, native ones
included, is checked before and after decoding; waits are sliced and checked (``flights``,
``gate``); overview builds have their own budget (``overview``)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from PIL import Image

from ..budget import checkpoint
from ..errors import AssociatedImageNotFound, TileOutOfBounds
from ..limits import (
    HEAVY_TILES,
    MAX_OVERVIEW_TILES,
    MAX_TILES_PER_REQUEST,
    OVERVIEW_DEADLINE_S,
    OVERVIEW_SIZE,
    SERVICE_CANVAS_PIXELS,
)
from ..slide.reader import SlideReader
from ..slide.region import decoded_bytes, region_tile_count, render_region
from ..slide.registry import SlideRegistry
from .cache import TileCache
from .color import ColorManager
from .dzi import DeepZoom
from .encoder import apply_quality, encode
from .flights import BudgetedFlights
from .gate import HeavyGate
from .overview import OverviewStore, resample_box
from .request import MEDIA_TYPES, ImageRequest, native_tile, scaled_level_size, tile_region

_CLOCKWISE = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180,
              270: Image.Transpose.ROTATE_90}

THUMBNAIL_MIN, THUMBNAIL_MAX = 64, OVERVIEW_SIZE


@dataclass(frozen=True, slots=True)
class ImageResult:
    """An encoded image, or only its ETag when the client's copy is current (``data`` None)."""

    data: bytes | None
    etag: str
    cache_hit: bool
    quality: int
    media_type: str = "image/jpeg"


@dataclass
class TileStats:
    rendered: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    native: int = 0  # requests served from one stored tile (no region render)


def etag_of(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


class TileService:
    """Thread-safe. ``gate`` caps this process's heavy renders (a fresh ``HeavyGate`` with
    the ``limits`` defaults unless given)."""

    def __init__(self, registry: SlideRegistry, cache: TileCache, *, default_quality: int = 80,
                 tile_size: int = 254, overlap: int = 1, gate: HeavyGate | None = None,
                 overview_size: int = OVERVIEW_SIZE, color: ColorManager | None = None,
                 overview_deadline: float = OVERVIEW_DEADLINE_S) -> None:
        self.registry = registry
        self.color = color if color is not None else ColorManager()
        self.cache = cache
        self.default_quality = default_quality
        self.dzi_tile_size, self.dzi_overlap = tile_size, overlap
        self.stats = TileStats()
        self.gate = gate if gate is not None else HeavyGate()
        self.overviews = OverviewStore(cache, self.gate, size=overview_size,
                                       build_s=overview_deadline)
        self._stats_lock = threading.Lock()
        self._flights: BudgetedFlights[tuple[bytes, bool]] = BudgetedFlights("a render")

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

        def render() -> tuple[bytes, bool]:
            """The image, and whether the cache had it after all: another process or
            another flight of this one may have stored it since the lookup above."""
            again = self.cache.get(key)
            if again is not None:
                return again, True
            with self._stats_lock:
                self.stats.rendered += 1
            encoded = produce()
            self.cache.set(key, encoded)
            return encoded, False

        (data, cached), shared = self._flights.do(key, render)
        self._count(hit=cached)
        return ImageResult(data, etag, shared or cached, quality)

    def _count(self, hit: bool) -> None:
        with self._stats_lock:
            if hit:
                self.stats.cache_hits += 1
            else:
                self.stats.cache_misses += 1

    def image(self, slide_id: str, request: ImageRequest,
              if_none_match: str | None = None) -> ImageResult:
        """Any ``ImageRequest`` of the slide: cached, ETagged, made once per process at a time
        (single flight) and within the limits. Read through ``registry.using``: a slide
        replaced in storage is reopened and the read retried once."""
        return self.registry.using(slide_id, lambda slide: self._request(
            slide, request, if_none_match))

    def request_key(self, slide: SlideReader, request: ImageRequest) -> str:
        """The cache key (and so the ETag) of ``request``: a native tile's is
        ``tile:{identity}:{level}:{x}:{y}`` whichever endpoint asked for it."""
        native = native_tile(slide.levels, slide.dimensions, request.region, request.size)
        suffix = request.suffix() + self._color_tag(slide)
        if native is not None:
            level, x, y = native
            return f"tile:{slide.identity}:{level}:{x}:{y}{suffix}"
        box = ",".join(repr(float(v)) for v in request.region)
        ow, oh = request.size
        return f"img:{slide.identity}:{box}:{ow}x{oh}{suffix}"

    def _profile(self, slide: SlideReader) -> bytes | None:
        """The slide's ICC profile when the colour mode uses it (never read for ``ignore`` or
        a slide without one: no storage request for nothing)."""
        if self.color.mode == "ignore" or not slide.info.has_icc_profile:
            return None
        return slide.icc_profile()

    def _color_tag(self, slide: SlideReader) -> str:
        """Slides with an ICC profile look different in each colour mode (and the key of a
        slide without one stays what it always was)."""
        return f":{self.color.cache_tag}" if slide.info.has_icc_profile else ""

    def _request(self, slide: SlideReader, request: ImageRequest,
                 if_none_match: str | None) -> ImageResult:
        key = self.request_key(slide, request)
        result = self._image(key, request.jpeg_quality, if_none_match,
                             lambda: self._produce(slide, request))
        return replace(result, media_type=request.media_type)

    def _produce(self, slide: SlideReader, request: ImageRequest) -> bytes:
        image, profile = self.color.apply(self.pixels(slide, request), self._profile(slide))
        if request.mirror:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if request.rotation:
            image = image.transpose(_CLOCKWISE[request.rotation])
        image = apply_quality(image, request.quality)
        if image.mode != "RGB":
            profile = None  # an RGB profile does not describe gray or bitonal pixels
        return encode(image, request.format, request.jpeg_quality, profile)

    def associated(self, slide_id: str, name: str, fmt: str, quality: int | None = None,
                   if_none_match: str | None = None) -> ImageResult:
        """The slide's label, macro or thumbnail image as ``fmt`` (``jpg`` or ``png``),
        cached and ETagged like any image, colour-managed like the slide, decoded in a heavy
        render slot (up to ``MAX_ASSOCIATED_PIXELS``)."""
        q = self._quality(quality)

        def produce(slide: SlideReader) -> bytes:
            with self.gate.slot(f"the {name} image of {slide.identity}"):
                checkpoint()
                pixels = slide.associated_image(name)
                checkpoint(decoded_bytes(pixels))
            image, profile = self.color.apply(pixels, self._profile(slide))
            return encode(image, fmt, q, profile)

        def serve(slide: SlideReader) -> ImageResult:
            if name not in slide.info.associated:
                raise AssociatedImageNotFound(slide_id, name)
            key = f"assoc:{slide.identity}:{name}:{fmt}:q{q}{self._color_tag(slide)}"
            result = self._image(key, q, if_none_match, lambda: produce(slide))
            return replace(result, media_type=MEDIA_TYPES[fmt])

        return self.registry.using(slide_id, serve)

    def pixels(self, slide: SlideReader, request: ImageRequest) -> Image.Image:
        """RGB pixels of ``request.region`` at ``request.size``: the stored tile when the
        request is one native tile, else resampled (Lanczos) from the slide's overview when
        the output is no more detailed than it, else rendered from the best level."""
        base_w, base_h = slide.dimensions
        x, y, w, h = request.region
        native = native_tile(slide.levels, slide.dimensions, request.region, request.size)
        if native is not None:
            with self._stats_lock:
                self.stats.native += 1
            checkpoint()  # no decode once the budget is spent or the client gone
            tile = slide.read_tile(*native)
            checkpoint(decoded_bytes(tile))
            return tile
        overview = self.overviews.geometry(slide)
        level_w, level_h = scaled_level_size(slide.dimensions, request.region, request.size)
        if overview is not None and level_w <= overview[0] and level_h <= overview[1]:
            fx, fy = overview[0] / base_w, overview[1] / base_h
            return resample_box(self.overviews.get(slide),
                                (x * fx, y * fy, (x + w) * fx, (y + h) * fy), request.size)
        downsample = min(w / request.size[0], h / request.size[1])
        info = slide.level(slide.best_level_for_downsample(downsample))
        sx, sy = info.width / base_w, info.height / base_h
        return self._render(slide, info.level, (x * sx, y * sy, w * sx, h * sy),
                            request.size, MAX_TILES_PER_REQUEST if request.max_tiles is None
                            else request.max_tiles, request.what)

    def tile(self, slide_id: str, level: int, x: int, y: int, quality: int | None = None,
             if_none_match: str | None = None) -> ImageResult:
        """Native tile (x, y) of ``level``; ``InvalidLevel``/``TileOutOfBounds`` when outside."""
        return self.registry.using(slide_id, lambda slide: self._request(
            slide, self.tile_request(slide, level, x, y, quality), if_none_match))

    def tile_request(self, slide: SlideReader, level: int, x: int, y: int,
                     quality: int | None = None) -> ImageRequest:
        info = slide.level(level)
        if not (0 <= x < info.tiles_x and 0 <= y < info.tiles_y):
            raise TileOutOfBounds(level, x, y, info.tiles_x, info.tiles_y)
        region, size = tile_region(info, slide.dimensions, x, y)
        return ImageRequest(region, size, self._quality(quality), what=f"tile {level}/{x}/{y}")

    def deep_zoom(self, slide: SlideReader) -> DeepZoom:
        width, height = slide.dimensions
        return DeepZoom(width, height, self.dzi_tile_size, self.dzi_overlap)

    def dzi_descriptor(self, slide_id: str) -> str:
        return self.registry.using(slide_id, lambda slide: self.deep_zoom(slide).descriptor())

    def dzi_tile(self, slide_id: str, dz_level: int, col: int, row: int,
                 quality: int | None = None, if_none_match: str | None = None) -> ImageResult:
        """A Deep Zoom tile rendered from the best native level for its scale."""
        return self.registry.using(slide_id, lambda slide: self._request(
            slide, self.dzi_request(slide, dz_level, col, row, quality), if_none_match))

    def dzi_request(self, slide: SlideReader, dz_level: int, col: int, row: int,
                    quality: int | None = None) -> ImageRequest:
        dz = self.deep_zoom(slide)
        x, y, w, h = dz.tile_bounds(dz_level, col, row)
        scale = dz.scale(dz_level)
        return ImageRequest((x * scale, y * scale, w * scale, h * scale), (w, h),
                            self._quality(quality),
                            what=f"Deep Zoom tile {dz_level}/{col}_{row}")

    def thumbnail(self, slide_id: str, max_size: int, quality: int | None = None,
                  if_none_match: str | None = None) -> ImageResult:
        """The whole slide with its longest side ``max_size`` (already clamped by the caller,
        never upscaled): resampled from the slide's overview when it has one, else from the
        smallest level that is at least that large."""
        return self.registry.using(slide_id, lambda slide: self._request(
            slide, self.thumbnail_request(slide, max_size, quality), if_none_match))

    def thumbnail_request(self, slide: SlideReader, max_size: int,
                          quality: int | None = None) -> ImageRequest:
        width, height = slide.dimensions
        longest = min(max_size, max(width, height))
        out = (max(1, round(width * longest / max(width, height))),
               max(1, round(height * longest / max(width, height))))
        return ImageRequest((0, 0, width, height), out, self._quality(quality),
                            max_tiles=MAX_OVERVIEW_TILES, what="thumbnail")

    def _quality(self, quality: int | None) -> int:
        return self.default_quality if quality is None else quality

    def _render(self, slide: SlideReader, level: int, box: tuple[float, float, float, float],
                out: tuple[int, int], max_tiles: int, what: str) -> Image.Image:
        """``render_region`` within the service's bounds; in a gate slot when heavy."""
        x, y, w, h = box
        info = slide.level(level)

        def render() -> Image.Image:
            return render_region(slide, level, x=x, y=y, width=w, height=h, out_size=out,
                                 max_tiles=max_tiles, max_canvas=SERVICE_CANVAS_PIXELS)

        if region_tile_count(info, x, y, w, h) <= HEAVY_TILES:
            return render()
        with self.gate.slot(f"{what} of {slide.identity}"):
            return render()


def clamp_thumbnail_size(requested: int) -> int:
    return max(THUMBNAIL_MIN, min(THUMBNAIL_MAX, requested))


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/").strip('"') for part in header.split(",")}
