"""Open slides by id: an LRU of parsed slides bounded by count and bytes, deduplicated
concurrent opens, one shared block store, and an optional shared structure cache (so another
process opens a known slide without parsing it again).

A slide never seen on this host is opened with ``Storage.open_probed`` (no ``HeadObject``: the
first reads give size and ETag). A known one is opened with ``open`` (``HeadObject``/``stat``)
so that its cached structure is found by identity without reading anything.

Revalidation is stale-while-revalidate: an entry older than ``revalidate_s`` is checked by the
one request that finds it stale (a ``HeadObject``/``stat``) while the others keep serving the
open slide; a new identity (ETag or mtime) opens the new content, a transient failure of the
check keeps the old entry. A read that finds the object replaced (``ObjectChanged``) drops the
entry at once; ``using`` reopens and retries such a read once.

Failures are remembered briefly so that a bad id is not paid for on every request: "not
found" for ``negative_ttl_s``, and an "unsupported"/"invalid" verdict by content identity (a
known-bad slide costs one ``HeadObject`` per ``revalidate_s``, never a re-parse). Transient
storage errors are never remembered."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..errors import ObjectChanged, SlideNotFound, StorageError, UnsupportedFormat, WsiError
from ..format import drivers
from ..format.contract import FormatDriver
from ..format.drivers import OPEN_HEAD, OPEN_TAIL, Parsed
from ..io.block_cache import BlockStore
from ..io.range_reader import RangeReader
from ..io.singleflight import SingleFlight, detached, own_copy
from ..io.storage import Storage
from ..limits import MAX_REMEMBERED_FAILURES, NOT_FOUND_TTL_S, OPEN_SLIDE_COST, OPEN_SLIDES_BYTES
from .reader import SlideReader

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_BYTES = OPEN_SLIDES_BYTES
STRUCTURE_COST = OPEN_SLIDE_COST
NEGATIVE_TTL_S = NOT_FOUND_TTL_S
MAX_VERDICTS = MAX_REMEMBERED_FAILURES


class StructureCache(Protocol):
    """Where parsed structures are shared (the tile layer's diskcache); keys are identities."""

    def get_structure(self, identity: str,
                      table: tuple[FormatDriver, ...] = drivers.NATIVE) -> Parsed | None: ...
    def put_structure(self, identity: str, parsed: Parsed) -> None: ...
    def known_slide(self, slide_id: str) -> bool: ...
    def remember_slide(self, slide_id: str, identity: str) -> None: ...


@dataclass
class _Entry:
    slide: SlideReader
    checked_at: float
    revalidating: bool = False


@dataclass(frozen=True)
class _Failure:
    error: WsiError
    until: float
    identity: str | None  # the content judged unsupported (None: not found)


class SlideRegistry:
    """Thread-safe. ``get(slide_id)`` returns an open ``SlideReader`` or raises
    ``SlideNotFound``/``UnsupportedFormat``/``StorageError``. Slides are parsed and opened
    by the first of ``formats`` (``format.drivers``) that reads them."""

    def __init__(self, storage: Storage, blocks: BlockStore, *, max_slides: int = 100,
                 max_bytes: int = DEFAULT_MAX_BYTES, revalidate_s: float = 60.0,
                 negative_ttl_s: float = NEGATIVE_TTL_S,
                 structures: StructureCache | None = None,
                 formats: tuple[FormatDriver, ...] = drivers.NATIVE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.storage = storage
        self.formats = formats
        self.blocks = blocks
        self.max_slides = max_slides
        self.max_bytes = max_bytes
        self.revalidate_s = revalidate_s
        self.negative_ttl_s = negative_ttl_s
        self.structures = structures
        self._clock = clock
        self._slides: OrderedDict[str, _Entry] = OrderedDict()
        self._failures: OrderedDict[str, _Failure] = OrderedDict()
        self._verdicts: OrderedDict[str, UnsupportedFormat] = OrderedDict()  # by identity
        self._flights: SingleFlight[SlideReader] = SingleFlight(what="a slide open")
        self._lock = threading.Lock()

    # --- lookups -------------------------------------------------------------------------

    def get(self, slide_id: str) -> SlideReader:
        now = self._clock()
        with self._lock:
            entry = self._slides.get(slide_id)
            if entry is not None:
                self._slides.move_to_end(slide_id)
                if entry.revalidating or now - entry.checked_at < self.revalidate_s:
                    return entry.slide
                entry.revalidating = True  # this request checks; the others keep serving
            else:
                failure = self._failures.get(slide_id)
                if failure is not None and now < failure.until:
                    raise own_copy(failure.error)
        if entry is not None:
            return self._revalidate(slide_id, entry)
        return self._open_shared(slide_id, None)

    def using(self, slide_id: str, fn: Callable[[SlideReader], T]) -> T:
        """``fn(slide)``; when the object turns out replaced mid-read, reopen and retry once."""
        slide = self.get(slide_id)
        try:
            return fn(slide)
        except ObjectChanged:
            self.invalidate(slide_id, slide.identity)
            return fn(self.get(slide_id))

    def invalidate(self, slide_id: str, identity: str | None = None) -> None:
        """Drop the open slide (only if it still has ``identity``, when given)."""
        with self._lock:
            entry = self._slides.get(slide_id)
            if entry is not None and (identity is None or entry.slide.identity == identity):
                del self._slides[slide_id]
            else:
                entry = None
        if entry is not None:
            logger.info("slide %s changed in storage; reopening", slide_id)
            entry.slide.close()

    def clear(self) -> None:
        with self._lock:
            entries = list(self._slides.values())
            self._slides.clear()
            self._failures.clear()
        for entry in entries:
            entry.slide.close()

    def cost_bytes(self) -> int:
        """What the open slides count against ``max_bytes`` now."""
        with self._lock:
            slides = [e.slide for e in self._slides.values()]
        return sum(_cost(s) for s in slides)

    def __len__(self) -> int:
        with self._lock:
            return len(self._slides)

    # --- opening ---------------------------------------------------------------------------

    def _revalidate(self, slide_id: str, entry: _Entry) -> SlideReader:
        try:
            raw = self.storage.open(slide_id)
        except SlideNotFound:
            self.invalidate(slide_id)
            raise
        except (StorageError, OSError) as exc:
            logger.warning("revalidating %s failed (%s); serving the open slide", slide_id, exc)
            with self._lock:
                entry.checked_at, entry.revalidating = self._clock(), False
            return entry.slide
        except BaseException:
            with self._lock:
                entry.revalidating = False
            raise
        if raw.identity == entry.slide.identity:
            _close(raw)
            with self._lock:
                entry.checked_at, entry.revalidating = self._clock(), False
            return entry.slide
        self.invalidate(slide_id, entry.slide.identity)
        return self._open_shared(slide_id, raw)

    def _open_shared(self, slide_id: str, raw: RangeReader | None) -> SlideReader:
        slide, _ = self._flights.do(slide_id, lambda: self._open_and_keep(slide_id, raw))
        return slide

    def _open_and_keep(self, slide_id: str, raw: RangeReader | None) -> SlideReader:
        try:
            slide = self._open(slide_id, raw)
        except SlideNotFound as exc:
            self._remember(slide_id, _Failure(exc, self._clock() + self.negative_ttl_s, None))
            raise
        with self._lock:
            self._failures.pop(slide_id, None)
            self._slides[slide_id] = _Entry(slide, self._clock())
            self._slides.move_to_end(slide_id)
            evicted = self._evict_locked()
        for old in evicted:
            old.close()
        return slide

    def _open(self, slide_id: str, raw: RangeReader | None) -> SlideReader:
        if raw is None:
            with self._lock:
                failure = self._failures.get(slide_id)
            known = (failure is not None and failure.identity is not None) or (
                self.structures is not None and self.structures.known_slide(slide_id))
            if known:
                raw = self.storage.open(slide_id)
            else:
                raw, first_reads = self.storage.open_probed(slide_id, OPEN_HEAD, OPEN_TAIL)
                self.blocks.put_ranges(raw.identity, first_reads)
        with self._lock:
            verdict = self._verdicts.get(raw.identity)
        if verdict is not None:
            _close(raw)
            self._remember(slide_id, _Failure(verdict, self._clock() + self.revalidate_s,
                                              raw.identity))
            raise own_copy(verdict)
        reader = self.blocks.view(raw)
        parsed = (self.structures.get_structure(reader.identity, self.formats)
                  if self.structures else None)
        if parsed is None:
            try:
                parsed = drivers.parse(reader, self.formats)
            except UnsupportedFormat as exc:
                reader.close()
                self._judge(slide_id, reader.identity, exc)
                raise
            if self.structures is not None:
                self.structures.put_structure(reader.identity, parsed)
                self.structures.remember_slide(slide_id, reader.identity)
        else:
            logger.debug("structure of %s from the shared cache", slide_id)
        return parsed.open(reader)

    def _judge(self, slide_id: str, identity: str, error: UnsupportedFormat) -> None:
        with self._lock:
            self._verdicts[identity] = detached(error)
            while len(self._verdicts) > MAX_VERDICTS:
                self._verdicts.popitem(last=False)
        self._remember(slide_id, _Failure(error, self._clock() + self.revalidate_s, identity))

    def _remember(self, slide_id: str, failure: _Failure) -> None:
        failure = _Failure(detached(failure.error), failure.until, failure.identity)
        with self._lock:
            self._failures[slide_id] = failure
            self._failures.move_to_end(slide_id)
            while len(self._failures) > MAX_VERDICTS:
                self._failures.popitem(last=False)

    def _evict_locked(self) -> list[SlideReader]:
        """Drop least recently used slides beyond the count or byte budget (the newest is
        always kept); return them to be closed outside the lock."""
        evicted: list[SlideReader] = []
        costs = {sid: _cost(e.slide) for sid, e in self._slides.items()}
        total = sum(costs.values())
        while len(self._slides) > 1 and (len(self._slides) > self.max_slides
                                         or total > self.max_bytes):
            slide_id, entry = self._slides.popitem(last=False)
            total -= costs[slide_id]
            evicted.append(entry.slide)
        return evicted


def _cost(slide: SlideReader) -> int:
    """Bytes an open slide holds: its structure plus the tile offset arrays loaded so far."""
    return STRUCTURE_COST + slide.cost_bytes


def _close(reader: object) -> None:
    close = getattr(reader, "close", None)
    if close is not None:
        close()
