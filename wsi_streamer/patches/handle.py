"""``SlideHandle``: one open slide as the pipeline's components see it (wsistream's API)."""

from __future__ import annotations

import os
from types import TracebackType

import numpy as np

from .backends.base import BackendSlide, PlainSlide, SlideBackend, StreamingBackend
from .backends.native import NativeBackend
from .types import SlideProperties


class SlideHandle:
    """An open slide. ``read_region`` takes x, y in level-0 pixels and width, height at
    ``level``; returns RGB uint8 (H, W, 3), white outside the slide. Thread-safe reads.

    ``backend``: ours (default ``NativeBackend()``), whose ``open_slide`` makes the slide, or
    a plain wsistream ``SlideBackend``, which is opened on ``path`` itself (as wsistream's
    handle does) and read one region at a time."""

    def __init__(self, path: str | os.PathLike[str],
                 backend: SlideBackend | StreamingBackend | None = None) -> None:
        self._path = path if isinstance(path, str) else os.fspath(path)
        self._backend = backend if backend is not None else NativeBackend()
        opener = getattr(self._backend, "open_slide", None)
        if callable(opener):
            self._slide: BackendSlide = opener(self._path)
        elif isinstance(self._backend, SlideBackend):
            self._slide = PlainSlide(self._backend, self._path)
        else:
            raise TypeError(f"backend must be a SlideBackend, got {type(backend).__name__}")

    @property
    def path(self) -> str:
        return self._path

    @property
    def identity(self) -> str:
        return self._slide.identity

    @property
    def properties(self) -> SlideProperties:
        return self._slide.properties

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0, *,
                    out_size: tuple[int, int] | None = None) -> np.ndarray:
        """Pixels of the ``width x height`` box of ``level`` whose top left is level-0
        ``(x, y)``; resampled (area filter) to ``out_size`` when given. wsistream's order
        (``x, y, width, height, level``); ours, ``out_size``, by keyword only."""
        return self._slide.read_region(x=x, y=y, level=level, width=width, height=height,
                                       out_size=out_size)

    def get_thumbnail(self, size: tuple[int, int] = (512, 512)) -> np.ndarray:
        """The whole slide fitted in ``size`` (aspect kept), RGB uint8."""
        return self._slide.get_thumbnail(size)

    def get_thumbnail_fit(self, size: tuple[int, int], fill: float) -> np.ndarray:
        """``get_thumbnail(size)``, or a cheaper image of the whole slide at least ``fill`` of
        its size on each side when the backend's slide offers one (the optional
        ``get_thumbnail_fit`` of ``backends.base.BackendSlide``: ``NativeBackend``'s returns
        a reduced level as it is instead of resampling it); the scale is the slide's
        dimensions over the image's."""
        fit = getattr(self._slide, "get_thumbnail_fit", None)
        if callable(fit):
            return np.asarray(fit(size, fill))
        return self._slide.get_thumbnail(size)

    def best_level_for_mpp(self, target_mpp: float) -> int:
        """The level whose mpp is nearest ``target_mpp`` (wsistream's rule; the samplers use
        ``sampling.base.plan_read`` instead, which resamples to the exact target)."""
        props = self.properties
        if props.mpp is None:
            return 0
        diffs = [abs(props.mpp * ds - target_mpp) for ds in props.level_downsamples]
        return int(np.argmin(diffs))

    def close(self) -> None:
        self._slide.close()

    def __enter__(self) -> SlideHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.properties.dimensions
        return (f"SlideHandle({self._path!r}, {w}x{h}, levels={self.properties.level_count}, "
                f"mpp={self.properties.mpp}, backend={self._backend!r})")
