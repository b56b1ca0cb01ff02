"""The two backend protocols.

``SlideBackend`` is wsistream's extension point, kept as it is: an abstract class whose
subclass opens one slide at a time (``open(path)``, ``read_region(x, y, level, width,
height)``, ``get_thumbnail(size)``, ``get_properties()``, ``close()``). A user's subclass
works in ``SlideHandle``, ``PatchPipeline`` and ``WsiStreamDataset`` unchanged: the pipeline
deep-copies it once per open slide (the user's object itself is never opened), reads through
it one region at a time, and hands it the path strings it was given, in any scheme
(``memory://...``).

``StreamingBackend`` is the richer protocol of our own backends (``NativeBackend``,
``OpenSlideBackend``): a factory of thread-safe open slides (``open_slide``), storage options
and the host cache (``configure``), I/O counters (``io_stats``). The engine speaks only this
one; ``as_streaming`` adapts a plain ``SlideBackend`` to it (``PlainBackend``), so both run
through the same engine, a plain one with sequential reads and no host cache.
"""

from __future__ import annotations

import copy
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from ..types import SlideProperties

if TYPE_CHECKING:
    from ...slide.hostcache import HostCache
    from ..sources import S3Options

__all__ = ["BackendSlide", "PlainBackend", "PlainSlide", "SlideBackend", "StreamingBackend",
           "StreamingSlideBackend", "as_streaming", "fit_region"]


class SlideBackend(ABC):
    """wsistream's backend: one open slide at a time. Implement the five methods to read a
    format or a store this package does not (``read_region`` takes x, y in level-0 pixels and
    width, height at ``level``; images are RGB uint8 ``(H, W, 3)``)."""

    @abstractmethod
    def open(self, path: str) -> None:
        """Open the slide at ``path`` (any string the backend understands)."""

    @abstractmethod
    def close(self) -> None:
        """Release the open slide."""

    @abstractmethod
    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """The ``width x height`` box of ``level`` whose top left is level-0 ``(x, y)``."""

    @abstractmethod
    def get_thumbnail(self, size: tuple[int, int]) -> np.ndarray:
        """The whole slide fitted in ``size`` (aspect kept)."""

    @abstractmethod
    def get_properties(self) -> SlideProperties:
        """Geometry and scale of the open slide."""


class BackendSlide(Protocol):
    """One open slide of a ``StreamingBackend``. Thread-safe reads; region arguments are
    keyword-only (x, y level-0; width, height at ``level``; ``out_size`` resamples).

    Optional: ``get_thumbnail_fit(size, fill)``, the whole slide at least ``fill`` of
    ``get_thumbnail(size)``'s size on each side at whatever scale is cheapest (the tissue
    mask's thumbnail, ``SlideHandle.get_thumbnail_fit``); a slide without it is asked for
    ``get_thumbnail(size)``."""

    @property
    def identity(self) -> str: ...  # content identity (ETag or mtime + size): a cache key
    @property
    def properties(self) -> SlideProperties: ...
    def read_region(self, *, x: int, y: int, level: int, width: int, height: int,
                    out_size: tuple[int, int] | None = None) -> np.ndarray: ...
    def get_thumbnail(self, size: tuple[int, int]) -> np.ndarray: ...
    def close(self) -> None: ...


class StreamingBackend(Protocol):
    """What the engine, ``SlideHandle`` and the mask store need of a backend."""

    def configure(self, *, storage_options: S3Options | None = None,
                  cache_dir: str | None = None, use_cache: bool = True) -> None: ...
    @property
    def host_cache(self) -> HostCache | None: ...
    def open_slide(self, path: str) -> BackendSlide: ...
    def io_stats(self) -> dict[str, int]: ...


def fit_region(image: np.ndarray, out_size: tuple[int, int] | None) -> np.ndarray:
    """``image`` as RGB (alpha dropped), resampled to ``out_size`` (area filter when
    shrinking, bicubic when enlarging) when given and different."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if out_size is None or (arr.shape[1], arr.shape[0]) == tuple(out_size):
        return arr
    shrink = out_size[0] < arr.shape[1]
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize(out_size, resample))


class PlainSlide:
    """A ``SlideBackend`` instance with one slide open, seen as a ``BackendSlide``: reads one
    at a time (a plain backend need not be thread-safe). Opening calls ``backend.open(path)``
    and ``get_properties()`` (closing again when that fails)."""

    def __init__(self, backend: SlideBackend, path: str) -> None:
        backend.open(path)
        try:
            self._properties = backend.get_properties()
        except BaseException:
            backend.close()
            raise
        self._backend = backend
        self._identity = f"{type(backend).__qualname__}:{path}"
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def properties(self) -> SlideProperties:
        return self._properties

    def read_region(self, *, x: int, y: int, level: int, width: int, height: int,
                    out_size: tuple[int, int] | None = None) -> np.ndarray:
        with self._lock:
            image = self._backend.read_region(x, y, level, width, height)
        return fit_region(image, out_size)

    def get_thumbnail(self, size: tuple[int, int]) -> np.ndarray:
        with self._lock:
            return fit_region(self._backend.get_thumbnail(size), None)

    def close(self) -> None:
        self._backend.close()


class PlainBackend:
    """A plain ``SlideBackend`` as a ``StreamingBackend``: each open slide gets its own deep
    copy of the prototype (never opened itself); no storage options, host cache or counters."""

    def __init__(self, prototype: SlideBackend) -> None:
        self.prototype = prototype

    def configure(self, *, storage_options: S3Options | None = None,
                  cache_dir: str | None = None, use_cache: bool = True) -> None:
        """Nothing to configure: the backend reads its paths its own way."""

    @property
    def host_cache(self) -> HostCache | None:
        return None

    def open_slide(self, path: str) -> PlainSlide:
        return PlainSlide(copy.deepcopy(self.prototype), path)

    def io_stats(self) -> dict[str, int]:
        return {}


class StreamingSlideBackend(SlideBackend):
    """Base of our own backends: a ``StreamingBackend`` (subclasses define ``open_slide``,
    and may override ``configure``, ``host_cache`` and ``io_stats``) that also offers
    wsistream's one-slide methods on top of it, for code that calls them directly."""

    _current: BackendSlide | None = None

    @abstractmethod
    def open_slide(self, path: str) -> BackendSlide:
        """A new open slide; thread-safe, independent of ``open``/``close``."""

    def configure(self, *, storage_options: S3Options | None = None,
                  cache_dir: str | None = None, use_cache: bool = True) -> None:
        """Storage options and the host cache folder; nothing by default."""

    @property
    def host_cache(self) -> HostCache | None:
        return None

    def io_stats(self) -> dict[str, int]:
        return {}

    def open(self, path: str) -> None:
        self.close()
        self._current = self.open_slide(path)

    def close(self) -> None:
        current, self._current = self._current, None
        if current is not None:
            current.close()

    def _require_open(self) -> BackendSlide:
        if self._current is None:
            raise RuntimeError(f"{type(self).__name__} is not open; call open() first")
        return self._current

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        return self._require_open().read_region(x=x, y=y, level=level, width=width,
                                                height=height)

    def get_thumbnail(self, size: tuple[int, int]) -> np.ndarray:
        return self._require_open().get_thumbnail(size)

    def get_properties(self) -> SlideProperties:
        return self._require_open().properties


def as_streaming(backend: SlideBackend | StreamingBackend) -> StreamingBackend:
    """``backend`` itself when it speaks the richer protocol, else a ``PlainBackend``
    around it; ``TypeError`` for anything that is neither."""
    if callable(getattr(backend, "open_slide", None)):
        return backend  # type: ignore[return-value]
    if isinstance(backend, SlideBackend):
        return PlainBackend(backend)
    raise TypeError(f"backend must be a SlideBackend, got {type(backend).__name__}")
