"""A slide made of several objects (a DICOM WSI series: one folder or key prefix, one object
per pyramid level and associated image) read as one ``RangeReader``.

The members are laid end to end in a virtual address space, in name order: member ``i``
occupies ``[offset_i, offset_i + size_i)``. A read inside one member is one read of that
member (one GET); a read across a boundary is split. So the registry, the block store, the
structure cache and the format seam see one reader with one identity, and a driver that
needs the boundaries (``format/dicom``) finds them in ``members``. The identity is a digest
of every member's name and identity (ETag, or mtime and size): replacing, adding or removing
any object is new content."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass

from ..errors import LimitExceeded
from ..limits import MAX_MEMBERS
from .range_reader import RangeReader, check_range

SERIES_MEMBERS = (".dcm",)
"""Object names that make a folder or prefix a series (one slide, id = the folder)."""

SELECTION_MARK = "@"
"""A series id may end with ``@<selection>``: which of the series' images the slide shows
(for DICOM: ``z=<focal plane index>``, ``path=<optical path identifier>``, comma-separated;
the driver reads it, ``format/dicom/planes``). The same series id without it is the default."""

_SELECTION = re.compile(r"[a-z]+=[^,=]+(,[a-z]+=[^,=]+)*")

MEMBER_HEAD = 64 * 1024
"""Bytes read at the start of every member when a series is opened (one read each, all at
once): a DICOM instance's header and offset table usually fit; a longer one is read again."""


@dataclass(frozen=True, slots=True)
class Member:
    """One object of a series: its name (relative to the series), where its bytes start in
    the series' address space, and its size."""

    name: str
    offset: int
    size: int


def is_member_name(name: str) -> bool:
    """Whether an object of this name belongs to a series (``SERIES_MEMBERS``)."""
    return name.lower().endswith(SERIES_MEMBERS) and not name.startswith(".")


def split_selection(slide_id: str) -> tuple[str, str]:
    """``(series id, selection)`` of an id ending with ``@<selection>`` (the last ``@`` of
    its last path segment, followed by ``key=value`` pairs joined by commas);
    ``(slide_id, "")`` otherwise (a folder named ``case@2`` is itself)."""
    folder, slash, name = slide_id.rpartition("/")
    base, mark, selection = name.rpartition(SELECTION_MARK)
    if not mark or not base or not _SELECTION.fullmatch(selection):
        return slide_id, ""
    return folder + slash + base, selection


def selection_of(reader: RangeReader) -> str:
    """The selection a series reader was opened with ("" for none or a single object)."""
    selection = getattr(reader, "selection", "")
    return selection if isinstance(selection, str) else ""


def members_of(reader: RangeReader) -> tuple[Member, ...] | None:
    """The members of a series reader (seen through any wrapper that forwards ``members``,
    such as the block cache), None for a single object."""
    members = getattr(reader, "members", None)
    return members if isinstance(members, tuple) and members else None


class SeriesReader:
    """``RangeReader`` over ``readers`` (name, reader) laid end to end in the given order.
    Thread-safe when the member readers are. ``close`` closes every member."""

    def __init__(self, where: str, readers: Sequence[tuple[str, RangeReader]],
                 selection: str = "") -> None:
        if not readers:
            raise ValueError("a series needs at least one object")
        members: list[Member] = []
        offset = 0
        for name, reader in readers:
            members.append(Member(name, offset, reader.size))
            offset += reader.size
        self._readers = tuple(reader for _, reader in readers)
        self._members = tuple(members)
        self._size = offset
        self.selection = selection
        digest = hashlib.sha256("\n".join(f"{name}\t{reader.identity}"
                                          for name, reader in readers).encode()).hexdigest()
        self._identity = f"{where}/#series-{digest[:32]}" + (
            f"{SELECTION_MARK}{selection}" if selection else "")

    @property
    def size(self) -> int:
        return self._size

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def members(self) -> tuple[Member, ...]:
        return self._members

    @property
    def readers(self) -> tuple[RangeReader, ...]:
        return self._readers

    def read(self, offset: int, length: int) -> bytes:
        check_range(offset, length, self._size)
        parts: list[bytes] = []
        end = offset + length
        for member, reader in zip(self._members, self._readers, strict=True):
            start, stop = max(offset, member.offset), min(end, member.offset + member.size)
            if start < stop:
                parts.append(reader.read(start - member.offset, stop - start))
        return parts[0] if len(parts) == 1 else b"".join(parts)  # empty: b""

    def close(self) -> None:
        for reader in self._readers:
            close = getattr(reader, "close", None)
            if close is not None:
                close()


def head_reads(reader: SeriesReader, head: int = MEMBER_HEAD) -> list[tuple[int, bytes]]:
    """The first ``head`` bytes of every member, read concurrently (one round trip), as
    ``(series offset, bytes)`` pieces."""
    members = reader.members

    def first(index: int) -> bytes:
        return reader.readers[index].read(0, min(head, members[index].size))

    wanted = [i for i, m in enumerate(members) if m.size]
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(wanted)))) as pool:
        futures = [pool.submit(copy_context().run, first, i) for i in wanted]
        return [(members[i].offset, f.result()) for i, f in zip(wanted, futures, strict=True)]


def series_of(names: Sequence[str], make: Callable[[str], RangeReader], where: str,
              selection: str = "") -> SeriesReader:
    """A ``SeriesReader`` of the member names (sorted; readers made by ``make(name)``), with
    ``selection`` (``split_selection``); ``LimitExceeded`` past ``MAX_MEMBERS``."""
    if len(names) > MAX_MEMBERS:
        raise LimitExceeded("MAX_MEMBERS", f"{where}: {len(names)} objects in one series "
                            f"(at most {MAX_MEMBERS})")
    return SeriesReader(where, [(name, make(name)) for name in sorted(names)], selection)
