"""Slides in a local folder, read with ``os.pread`` and confined to that folder."""

from __future__ import annotations

import os
import threading

from ..errors import SlideNotFound, StorageError
from .range_reader import IoStats, check_range, record_storage_request
from .storage import SlidePage, is_slide_name, page_of, probe_reads, validate_slide_id


class LocalReader:
    """``RangeReader`` over one open file; ``identity`` includes mtime and size."""

    def __init__(self, path: str, slide_id: str, stats: IoStats | None = None) -> None:
        try:
            self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError as exc:
            raise SlideNotFound(slide_id) from exc
        except OSError as exc:
            raise StorageError(f"cannot open slide {slide_id!r}: {exc.strerror}") from exc
        st = os.fstat(self._fd)
        self._size = st.st_size
        self._identity = f"file://{slide_id}#{st.st_mtime_ns:x}-{st.st_size:x}"
        self.stats = stats if stats is not None else IoStats()
        self._closed = threading.Event()

    @property
    def size(self) -> int:
        return self._size

    @property
    def identity(self) -> str:
        return self._identity

    def read(self, offset: int, length: int) -> bytes:
        check_range(offset, length, self._size)
        record_storage_request(self.stats, length)
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as exc:
            raise StorageError(f"read failed: {exc.strerror}") from exc
        if len(data) != length:
            raise StorageError(f"short read: {len(data)} of {length} bytes (file changed?)")
        return data

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            os.close(self._fd)

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, AttributeError):
            pass


class LocalStorage:
    """A folder of slides. Ids are ``/``-separated paths relative to ``root``; they can never
    resolve (through ``..`` or symlinks) to a file outside it."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.stats = IoStats()

    def _resolve(self, slide_id: str) -> str:
        validate_slide_id(slide_id)
        path = os.path.realpath(os.path.join(self.root, *slide_id.split("/")))
        if not path.startswith(self.root + os.sep) or not os.path.isfile(path):
            raise SlideNotFound(slide_id)
        return path

    def open(self, slide_id: str) -> LocalReader:
        return LocalReader(self._resolve(slide_id), slide_id, self.stats)

    def open_probed(self, slide_id: str, head: int, tail: int
                    ) -> tuple[LocalReader, list[tuple[int, bytes]]]:
        reader = self.open(slide_id)
        return reader, probe_reads(reader, head, tail)

    def list_slides(self, *, prefix: str = "", search: str = "", cursor: str | None = None,
                    limit: int = 100) -> SlidePage:
        needle = search.lower()
        ids: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, self.root)
            for name in filenames:
                slide_id = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                if (is_slide_name(name) and slide_id.startswith(prefix)
                        and needle in slide_id.lower()
                        and (cursor is None or slide_id > cursor)):
                    ids.append(slide_id)
        ids.sort()
        return page_of(ids[: limit + 1], limit)

    def check(self) -> str:
        if not os.path.isdir(self.root):
            raise StorageError(f"slides folder does not exist: {os.path.basename(self.root)}")
        return f"local folder {self.root}"
