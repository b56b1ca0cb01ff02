"""Open slides by id: an LRU of parsed slides, deduplicated concurrent opens, one shared block
store, and an optional shared structure cache (so another process opens a known slide without
parsing it again).

A slide id is re-validated against storage (``HeadObject``/``stat``) at most every
``revalidate_s`` seconds; a changed identity (new ETag or mtime) opens the new content."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..format.detect import SlideStructure, parse_structure
from ..format.tiled import TiffSlide
from ..io.block_cache import BlockStore
from ..io.storage import Storage
from .reader import SlideReader

logger = logging.getLogger(__name__)


class StructureCache(Protocol):
    """Where parsed structures are shared (the tile layer's diskcache); keys are identities."""

    def get_structure(self, identity: str) -> SlideStructure | None: ...
    def put_structure(self, identity: str, structure: SlideStructure) -> None: ...


@dataclass
class _Entry:
    slide: SlideReader
    checked_at: float


class _Opening:
    __slots__ = ("event", "slide", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.slide: SlideReader | None = None
        self.error: BaseException | None = None


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
        self._opening: dict[str, _Opening] = {}
        self._lock = threading.Lock()

    def get(self, slide_id: str) -> SlideReader:
        now = self._clock()
        with self._lock:
            entry = self._slides.get(slide_id)
            if entry is not None and now - entry.checked_at < self.revalidate_s:
                self._slides.move_to_end(slide_id)
                return entry.slide
            opening = self._opening.get(slide_id)
            mine = opening is None
            if opening is None:
                opening = self._opening[slide_id] = _Opening()
        if not mine:
            opening.event.wait()
            if opening.error is not None:
                raise opening.error
            assert opening.slide is not None
            return opening.slide
        try:
            slide = self._open(slide_id, entry.slide if entry else None)
        except BaseException as exc:
            opening.error = exc
            with self._lock:
                self._opening.pop(slide_id, None)
                self._slides.pop(slide_id, None)
            opening.event.set()
            raise
        opening.slide = slide
        with self._lock:
            self._slides[slide_id] = _Entry(slide, self._clock())
            self._slides.move_to_end(slide_id)
            while len(self._slides) > self.max_slides:
                self._slides.popitem(last=False)
            self._opening.pop(slide_id, None)
        opening.event.set()
        return slide

    def _open(self, slide_id: str, previous: SlideReader | None) -> SlideReader:
        reader = self.store.view(self.storage.open(slide_id))
        if previous is not None and previous.identity == reader.identity:
            return previous
        structure = self.structures.get_structure(reader.identity) if self.structures else None
        if structure is None:
            structure = parse_structure(reader)
            if self.structures is not None:
                self.structures.put_structure(reader.identity, structure)
        else:
            logger.debug("structure of %s from the shared cache", slide_id)
        return TiffSlide(reader, structure)

    def clear(self) -> None:
        with self._lock:
            self._slides.clear()
