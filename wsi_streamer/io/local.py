"""Slides in a local folder, read with ``os.pread`` and confined to that folder."""

from __future__ import annotations

import os
import threading

from ..errors import ObjectChanged, SlideNotFound, StorageError
from .range_reader import IoStats, check_range, in_flight, record_storage_request
from .series import SeriesReader, head_reads, is_member_name, series_of, split_selection
from .storage import SLIDE_EXTENSIONS, SlidePage, page_of, probe_reads, validate_slide_id


class LocalReader:
    """``RangeReader`` over one file; ``identity`` includes mtime and size.

    ``close`` releases the descriptor (at once, or when the last read in progress ends), and
    a later read reopens the file, raising ``ObjectChanged`` if it is no longer the same
    content, so closing a slide evicted from a cache never breaks a request still using it."""

    def __init__(self, path: str, slide_id: str, stats: IoStats | None = None) -> None:
        self._path, self._slide_id = path, slide_id
        self._lock = threading.Lock()
        self._users = 0
        self._closing = False
        self._fd = -1
        self._fd = self._open()
        st = os.fstat(self._fd)
        self._size = st.st_size
        self._identity = _identity(slide_id, st)
        self.stats = stats if stats is not None else IoStats()

    def _open(self) -> int:
        try:
            return os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError as exc:
            raise SlideNotFound(self._slide_id) from exc
        except OSError as exc:
            raise StorageError(f"cannot open slide {self._slide_id!r}: {exc.strerror}") from exc

    @property
    def size(self) -> int:
        return self._size

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def local_path(self) -> str:
        """The file itself, for readers that open paths (the OpenSlide driver)."""
        return self._path

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    def read(self, offset: int, length: int) -> bytes:
        check_range(offset, length, self._size)
        record_storage_request(self.stats, length)
        fd = self._acquire()
        try:
            with in_flight():
                data = os.pread(fd, length, offset)
        except OSError as exc:
            raise StorageError(f"read failed: {exc.strerror}") from exc
        finally:
            self._release()
        if len(data) != length:
            raise StorageError(f"short read: {len(data)} of {length} bytes (file changed?)")
        return data

    def _acquire(self) -> int:
        with self._lock:
            if self._fd < 0:
                fd = self._open()
                if _identity(self._slide_id, os.fstat(fd)) != self._identity:
                    os.close(fd)
                    raise ObjectChanged(self._slide_id)
                self._fd = fd
            self._closing = False
            self._users += 1
            return self._fd

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._closing and self._users == 0:
                self._close_locked()

    def close(self) -> None:
        with self._lock:
            if self._users:
                self._closing = True
            else:
                self._close_locked()

    def _close_locked(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._closing = False

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, AttributeError):
            pass


def _identity(slide_id: str, st: os.stat_result) -> str:
    return f"file://{slide_id}#{st.st_mtime_ns:x}-{st.st_size:x}"


def _member_files(folder: str) -> list[str]:
    """The series members directly in ``folder`` (plain files, not hidden)."""
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if is_member_name(e.name) and e.is_file()]
    except OSError:
        return []


def _hidden(parts: list[str]) -> bool:
    return any(part.startswith(".") for part in parts)


class LocalStorage:
    """A folder of slides. Ids are ``/``-separated paths relative to ``root``; they can never
    resolve (through ``..`` or symlinks) to a file outside it. Only what ``list_slides`` can
    list is opened: names with a slide extension, no dot-file or dot-folder on the way (by id
    or once symlinks are resolved), so an id tells nothing about other files (404 alike).
    ``extensions``: the names listed and served (the format drivers enabled say which);
    ``openable``: more names opened, not listed, so that a format recognised but not served
    (NDPI without the OpenSlide fallback) is answered with the reason (415), not 404."""

    def __init__(self, root: str, extensions: tuple[str, ...] = SLIDE_EXTENSIONS,
                 openable: tuple[str, ...] = ()) -> None:
        self.root = os.path.realpath(root)
        self.extensions = tuple(e.lower() for e in extensions)
        self.openable = self.extensions + tuple(e.lower() for e in openable)
        self.stats = IoStats()

    def _is_slide(self, name: str) -> bool:
        return name.lower().endswith(self.extensions)

    def _resolve(self, slide_id: str) -> str:
        validate_slide_id(slide_id)
        parts = slide_id.split("/")
        if _hidden(parts) or not parts[-1].lower().endswith(self.openable):
            raise SlideNotFound(slide_id)
        path = os.path.realpath(os.path.join(self.root, *parts))
        if not path.startswith(self.root + os.sep) or not os.path.isfile(path):
            raise SlideNotFound(slide_id)
        if _hidden(os.path.relpath(path, self.root).split(os.sep)):
            raise SlideNotFound(slide_id)
        return path

    def _series(self, slide_id: str) -> tuple[str, list[str]] | None:
        """The folder of a series id and its member names, None when the id is no series."""
        validate_slide_id(slide_id)
        parts = slide_id.split("/")
        if _hidden(parts):
            return None
        path = os.path.realpath(os.path.join(self.root, *parts))
        if (not path.startswith(self.root + os.sep) or not os.path.isdir(path)
                or _hidden(os.path.relpath(path, self.root).split(os.sep))):
            return None
        names = [name for name in _member_files(path) if self._inside(os.path.join(path, name))]
        return (path, names) if names else None

    def _inside(self, path: str) -> bool:
        """Whether ``path`` resolves (symlinks followed) to a visible file under the root."""
        real = os.path.realpath(path)
        return real.startswith(self.root + os.sep) and not _hidden(
            os.path.relpath(real, self.root).split(os.sep))

    def open(self, slide_id: str) -> LocalReader | SeriesReader:
        """A file's reader, or for a series folder a ``SeriesReader`` of its members."""
        if not slide_id.lower().endswith(self.openable):
            validate_slide_id(slide_id)
            series_id, selection = split_selection(slide_id)
            series = self._series(series_id)
            if series is not None:
                folder, names = series
                return series_of(names, lambda name: LocalReader(
                    os.path.join(folder, name), f"{series_id}/{name}", self.stats),
                    f"file://{series_id}", selection)
        return LocalReader(self._resolve(slide_id), slide_id, self.stats)

    def open_probed(self, slide_id: str, head: int, tail: int
                    ) -> tuple[LocalReader | SeriesReader, list[tuple[int, bytes]]]:
        reader = self.open(slide_id)
        if isinstance(reader, SeriesReader):
            return reader, head_reads(reader)
        return reader, probe_reads(reader, head, tail)

    def list_slides(self, *, prefix: str = "", search: str = "", cursor: str | None = None,
                    limit: int = 100) -> SlidePage:
        needle = search.lower()
        ids: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, self.root)
            folder_id = rel.replace(os.sep, "/")
            if (rel != "." and any(is_member_name(n) for n in filenames)
                    and folder_id.startswith(prefix) and needle in folder_id.lower()
                    and (cursor is None or folder_id > cursor)):
                ids.append(folder_id)  # a series: one slide
            for name in filenames:
                slide_id = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                if (self._is_slide(name) and not name.startswith(".")
                        and slide_id.startswith(prefix)
                        and needle in slide_id.lower()
                        and (cursor is None or slide_id > cursor)):
                    ids.append(slide_id)
        ids.sort()
        return page_of(ids[: limit + 1], limit)

    def check(self) -> str:
        if not os.path.isdir(self.root):
            raise StorageError(f"slides folder does not exist: {os.path.basename(self.root)}")
        return f"local folder {self.root}"
