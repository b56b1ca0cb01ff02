"""``OpenSlideBackend``: OpenSlide on local files (``pip install "wsi_streamer[openslide]"``),
for what the native parser refuses (NDPI, MRXS, SCN, ...). Slides are opened through the
OpenSlide format driver (``format.openslide_driver``, the one the server's fallback uses);
regions are read by OpenSlide directly and composited on white."""

from __future__ import annotations

import numpy as np

from ...slide.reader import open_with_openslide
from ..sources import is_remote
from ..types import SlideProperties
from .base import StreamingSlideBackend, fit_region
from .native import properties_of


class OpenSlideSlide:
    """One slide open in OpenSlide (a ``BackendSlide``)."""

    def __init__(self, path: str) -> None:
        self._slide = open_with_openslide(path)
        self._properties = properties_of(path, self._slide)

    @property
    def identity(self) -> str:
        return self._slide.identity

    @property
    def properties(self) -> SlideProperties:
        return self._properties

    def read_region(self, *, x: int, y: int, level: int, width: int, height: int,
                    out_size: tuple[int, int] | None = None) -> np.ndarray:
        image = self._slide.read_region((x, y), level, (width, height))
        return fit_region(np.asarray(image), out_size)

    def get_thumbnail(self, size: tuple[int, int]) -> np.ndarray:
        return np.asarray(self._slide.thumbnail(size))

    def close(self) -> None:
        self._slide.close()


class OpenSlideBackend(StreamingSlideBackend):
    """OpenSlide on local files; ``ImportError`` naming the extra when it is not installed."""

    def __init__(self) -> None:
        try:
            import openslide  # noqa: F401
        except ImportError as exc:
            raise ImportError('OpenSlideBackend needs OpenSlide: '
                              'pip install "wsi_streamer[openslide]"') from exc

    def open_slide(self, path: str) -> OpenSlideSlide:
        if is_remote(path):
            raise ValueError(f"OpenSlideBackend reads local files only, not {path}")
        return OpenSlideSlide(path)

    def __repr__(self) -> str:
        return "OpenSlideBackend()"
