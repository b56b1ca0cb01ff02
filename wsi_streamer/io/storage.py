"""What slide storage (a backend: S3, HTTP, a folder) offers besides range reads: opening by
id and listing, plus id rules. (The block store, ``io.block_cache``, caches byte ranges.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import InvalidSlideId
from .range_reader import IoStats, RangeReader

# Slide file names, their one home (the lowest layer: every other imports these). What the
# native readers read, listed by every storage (``format/tiff``'s driver), and what only
# OpenSlide reads (``format/openslide_driver``: local folders with the fallback on).
SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff")
OPENSLIDE_ONLY_EXTENSIONS = (".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
MAX_ID_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class SlidePage:
    slides: tuple[str, ...]
    next_cursor: str | None


class Storage(Protocol):
    stats: IoStats  # every storage request this storage made, in this process

    def open(self, slide_id: str) -> RangeReader:
        """Return a reader for the slide; raise ``SlideNotFound`` or a ``StorageError``."""
        ...

    def open_probed(self, slide_id: str, head: int, tail: int
                    ) -> tuple[RangeReader, list[tuple[int, bytes]]]:
        """``open`` plus the first ``head`` and last ``tail`` bytes, with as few serial round
        trips as the backend allows; returns the reader and the ``(offset, bytes)`` read."""
        ...

    def list_slides(self, *, prefix: str = "", search: str = "", cursor: str | None = None,
                    limit: int = 100) -> SlidePage:
        """Slide ids in lexicographic order after ``cursor``, at most ``limit`` of them."""
        ...

    def check(self) -> str:
        """Raise unless the storage is reachable; return a one-line description."""
        ...


def validate_slide_id(slide_id: str) -> str:
    """Return the id unchanged or raise ``InvalidSlideId`` (reported as 404, never echoed raw).

    Rejected: empty, longer than ``MAX_ID_LENGTH``, control characters (NUL...), backslashes,
    absolute paths, and ``.``/``..``/empty path segments.
    """
    if not slide_id or len(slide_id) > MAX_ID_LENGTH:
        raise InvalidSlideId(slide_id[:64])
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in slide_id) or "\\" in slide_id:
        raise InvalidSlideId(repr(slide_id[:64]))
    if slide_id.startswith("/") or any(seg in ("", ".", "..") for seg in slide_id.split("/")):
        raise InvalidSlideId(slide_id[:64])
    return slide_id


def probe_reads(reader: RangeReader, head: int, tail: int) -> list[tuple[int, bytes]]:
    """The head and tail reads of ``open_probed`` for stores that know the size up front."""
    size = reader.size
    first = min(head, size)
    start = max(first, size - tail)
    reads = [(0, reader.read(0, first))] if first else []
    return reads + ([(start, reader.read(start, size - start))] if start < size else [])


def is_slide_name(name: str) -> bool:
    return name.lower().endswith(SLIDE_EXTENSIONS)


def page_of(ids: list[str], limit: int) -> SlidePage:
    """Cut a sorted candidate list (one longer than ``limit`` when more exist) into a page."""
    if len(ids) > limit:
        return SlidePage(tuple(ids[:limit]), ids[limit - 1])
    return SlidePage(tuple(ids), None)
