"""One bounded overview per slide: the whole slide at ``OVERVIEW_SIZE`` px on its long side,
built once from the smallest level at least that large (``slide.region.render_overview``:
DCT-scaled decoding, memory under 4x the overview), stored losslessly (PNG) in the host tile
cache for every process of the host and kept decoded in a small per-process LRU. Thumbnails
and Deep Zoom levels no larger than it are resampled from it, so a new ``max_size`` or
``quality`` costs a resize, not a level's worth of tile decodes.

Slides no larger than ``OVERVIEW_SIZE`` have none (``geometry`` is None): every level of
them is small, and they are rendered from their smallest adequate level as before.

A build is shared work: its waiters use it, and every worker of the host through the tile
cache. So it runs under a budget of its own (``build_s``, ``WSI_OVERVIEW_DEADLINE``, and
``MAX_DECODED_BYTES``), not under the deadline or the client of the request that happened to
start it: that request waits for the build (at most ``build_s``), the requests that come while
it runs wait on their own deadline (``flights``), and a client leaving abandons nothing."""

from __future__ import annotations

import io
import logging
import math
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image

from ..budget import applied, within
from ..limits import (
    MAX_DECODED_BYTES,
    MAX_OVERVIEW_TILES,
    OVERVIEW_DEADLINE_S,
    OVERVIEW_MEMORY_BYTES,
    OVERVIEW_SIZE,
    SERVICE_CANVAS_PIXELS,
)
from ..slide.reader import SlideReader
from ..slide.region import overview_level, render_overview
from .cache import TileCache
from .flights import BudgetedFlights
from .gate import HeavyGate

logger = logging.getLogger(__name__)

WHITE = (255, 255, 255)
_VERSION = 1  # part of the cache key: bump when the way overviews are made changes


@dataclass
class OverviewStats:
    built: int = 0  # rendered from tiles
    loaded: int = 0  # decoded from the host cache
    memory_hits: int = 0


def overview_geometry(dimensions: tuple[int, int], size: int = OVERVIEW_SIZE
                      ) -> tuple[int, int] | None:
    """The overview's ``(width, height)`` for a slide of ``dimensions`` (long side ``size``),
    or None when the slide is no larger than that."""
    width, height = dimensions
    longest = max(width, height)
    if longest <= size:
        return None
    return (max(1, round(width * size / longest)), max(1, round(height * size / longest)))


def resample_box(image: Image.Image, box: tuple[float, float, float, float],
                 out_size: tuple[int, int]) -> Image.Image:
    """``box`` of ``image`` (pixels, may be fractional or reach outside it: white there)
    resampled to ``out_size`` with Lanczos; an integer box of exactly that size is copied."""
    x0, y0, x1, y1 = box
    if x0 < 0 or y0 < 0 or x1 > image.width or y1 > image.height:
        left, top = math.floor(x0), math.floor(y0)
        padded = Image.new("RGB", (math.ceil(x1) - left, math.ceil(y1) - top), WHITE)
        inside = (max(0, left), max(0, top), min(image.width, math.ceil(x1)),
                  min(image.height, math.ceil(y1)))
        if inside[0] < inside[2] and inside[1] < inside[3]:
            padded.paste(image.crop(inside), (inside[0] - left, inside[1] - top))
        image, box = padded, (x0 - left, y0 - top, x1 - left, y1 - top)
    if all(float(v).is_integer() for v in box):
        crop = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
        if (crop[2] - crop[0], crop[3] - crop[1]) == out_size:
            return image.crop(crop)
    return image.resize(out_size, Image.Resampling.LANCZOS, box=box)


class OverviewStore:
    """Thread-safe. ``get(slide)`` returns the slide's overview (an ``Image`` shared between
    callers: read it, never draw on it), building it at most once per host at a time per
    process (single flight here, the host cache across processes), inside ``gate``."""

    def __init__(self, cache: TileCache, gate: HeavyGate, *, size: int = OVERVIEW_SIZE,
                 memory_bytes: int = OVERVIEW_MEMORY_BYTES,
                 max_tiles: int = MAX_OVERVIEW_TILES,
                 max_canvas: int = SERVICE_CANVAS_PIXELS,
                 build_s: float = OVERVIEW_DEADLINE_S) -> None:
        self.cache, self.gate, self.size, self.build_s = cache, gate, size, build_s
        self.memory_bytes, self.max_tiles, self.max_canvas = memory_bytes, max_tiles, max_canvas
        self.stats = OverviewStats()
        self._images: OrderedDict[str, Image.Image] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self._flights: BudgetedFlights[Image.Image] = BudgetedFlights("an overview build")

    def geometry(self, slide: SlideReader) -> tuple[int, int] | None:
        return overview_geometry(slide.dimensions, self.size)

    def key(self, slide: SlideReader) -> str:
        return f"overview:v{_VERSION}:{slide.identity}:{self.size}"

    def get(self, slide: SlideReader) -> Image.Image:
        """The overview; ``LimitExceeded`` when the slide cannot have one within the limits,
        ``Overloaded`` when no heavy-render slot frees in time, ``DeadlineExceeded`` when the
        build passes ``build_s`` (or, waiting for another request's build, the caller's own
        budget ends). Only for slides larger than ``size`` (``geometry`` not None)."""
        key = self.key(slide)
        with self._lock:
            image = self._images.get(key)
            if image is not None:
                self._images.move_to_end(key)
                self.stats.memory_hits += 1
                return image
        image, _ = self._flights.do(key, lambda: self._shared(slide, key))
        return image

    def _shared(self, slide: SlideReader, key: str) -> Image.Image:
        """The load or build, under its own budget only (see the module docstring)."""
        with applied(None), within(self.build_s, f"the overview of {slide.identity}",
                                   decoded_bytes=MAX_DECODED_BYTES):
            return self._load_or_build(slide, key)

    def _load_or_build(self, slide: SlideReader, key: str) -> Image.Image:
        size = self.geometry(slide)
        assert size is not None, "slides no larger than the overview have none"
        image = self._load(key, size)
        if image is None:
            image = self._build(slide, size)
            buf = io.BytesIO()
            image.save(buf, "PNG", compress_level=1)
            self.cache.set(key, buf.getvalue())
        self._remember(key, image)
        return image

    def _load(self, key: str, size: tuple[int, int]) -> Image.Image | None:
        data = self.cache.get(key)
        if data is None:
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=("PNG",))
                image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            logger.warning("cached overview %s unreadable: %s", key, exc)
            return None
        if image.size != size or image.mode != "RGB":
            logger.warning("cached overview %s is %s %s, not RGB %s", key, image.mode,
                           image.size, size)
            return None
        with self._lock:
            self.stats.loaded += 1
        return image

    def _build(self, slide: SlideReader, size: tuple[int, int]) -> Image.Image:
        with self.gate.slot(f"overview of {slide.identity}"):
            image = render_overview(slide, overview_level(slide, size), size,
                                    max_tiles=self.max_tiles,
                                    max_canvas=self.max_canvas)
        with self._lock:
            self.stats.built += 1
        return image

    def _remember(self, key: str, image: Image.Image) -> None:
        cost = image.width * image.height * 3
        if cost > self.memory_bytes:
            return
        with self._lock:
            if key in self._images:
                return
            self._images[key] = image
            self._held += cost
            while self._held > self.memory_bytes:
                _, old = self._images.popitem(last=False)
                self._held -= old.width * old.height * 3

    def clear(self) -> None:
        with self._lock:
            self._images.clear()
            self._held = 0
