"""Open slides by id: an LRU of parsed slides, deduplicated concurrent opens, one shared block
store, and an optional shared structure cache (so another process opens a known slide without
parsing it again).

A slide never seen on this host is opened with ``Storage.open_probed`` (no ``HeadObject``: the
first reads give size and ETag). A known one is opened with ``open`` (``HeadObject``/``stat``)
so that its cached structure is found by identity without reading anything. A slide id is
re-validated this way at most every ``revalidate_s`` seconds; a changed identity (new ETag or
mtime) opens the new content."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..format.detect import OPEN_HEAD, OPEN_TAIL, SlideStructure, parse_structure
from ..format.tiled import TiffSlide
from ..io.block_cache import BlockStore
from ..io.singleflight import SingleFlight
from ..io.storage import Storage
from .reader import SlideReader

logger = logging.getLogger(__name__)


class StructureCache(Protocol):
    """Where parsed structures are shared (the tile layer's diskcache); keys are identities."""

    def get_structure(self, identity: str) -> SlideStructure | None: ...
    def put_structure(self, identity: str, structure: SlideStructure) -> None: ...
    def known_slide(self, slide_id: str) -> bool: ...
    def remember_slide(self, slide_id: str, identity: str) -> None: ...


@dataclass
class _Entry:
    slide: SlideReader
    checked_at: float


class SlideRegistry:
    """Thread-safe. ``get(slide_id)`` returns an open ``SlideReader`` or raises
    ``SlideNotFound``/``UnsupportedFormat``/``StorageError`` (failures are not cached)."""

    def __init__(self, storage: Storage, store: BlockStore, *, max_slides: int = 100,
                 revalidate_s: float = 60.0, structures: StructureCache | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.storage = storage
        self.store = store
        self.max_slides = max_slides
        self.revalidate_s = revalidate_s
        self.structures = structures
        self._clock = clock
        self._slides: OrderedDict[str, _Entry] = OrderedDict()
        self._flights: SingleFlight[SlideReader] = SingleFlight()
        self._lock = threading.Lock()

    def get(self, slide_id: str) -> SlideReader:
        now = self._clock()
        with self._lock:
            entry = self._slides.get(slide_id)
            if entry is not None and now - entry.checked_at < self.revalidate_s:
                self._slides.move_to_end(slide_id)
                return entry.slide
        try:
            slide, _ = self._flights.do(slide_id, lambda: self._open_and_keep(slide_id, entry))
        except BaseException:
            with self._lock:
                self._slides.pop(slide_id, None)
            raise
        return slide

    def _open_and_keep(self, slide_id: str, entry: _Entry | None) -> SlideReader:
        slide = self._open(slide_id, entry.slide if entry else None)
        with self._lock:
            self._slides[slide_id] = _Entry(slide, self._clock())
            self._slides.move_to_end(slide_id)
            while len(self._slides) > self.max_slides:
                self._slides.popitem(last=False)
        return slide

    def _open(self, slide_id: str, previous: SlideReader | None) -> SlideReader:
        known = previous is not None or (
            self.structures is not None and self.structures.known_slide(slide_id))
        if known:
            reader = self.store.view(self.storage.open(slide_id))
        else:
            raw, first_reads = self.storage.open_probed(slide_id, OPEN_HEAD, OPEN_TAIL)
            self.store.put_ranges(raw.identity, first_reads)
            reader = self.store.view(raw)
        if previous is not None and previous.identity == reader.identity:
            return previous
        structure = self.structures.get_structure(reader.identity) if self.structures else None
        if structure is None:
            structure = parse_structure(reader)
            if self.structures is not None:
                self.structures.put_structure(reader.identity, structure)
                self.structures.remember_slide(slide_id, reader.identity)
        else:
            logger.debug("structure of %s from the shared cache", slide_id)
        return TiffSlide(reader, structure)

    def clear(self) -> None:
        with self._lock:
            self._slides.clear()
