"""``TiffSlideBackend``: the name wsistream users have in their code, read through our native
reader (``NativeBackend``, same arguments) rather than tiffslide: the same formats (SVS and
generic tiled TIFF) over range requests, local files and S3 alike. A one-time warning says so."""

from __future__ import annotations

import threading
import warnings
from typing import Any

from .native import NativeBackend

_warned = threading.Event()


class TiffSlideBackend(NativeBackend):
    """``NativeBackend`` under wsistream's name (tiffslide itself is not used)."""

    def __init__(self, **kwargs: Any) -> None:
        if not _warned.is_set():
            _warned.set()
            warnings.warn("TiffSlideBackend reads through wsi_streamer's native reader "
                          "(NativeBackend), not tiffslide", UserWarning, stacklevel=2)
        super().__init__(**kwargs)

    def __repr__(self) -> str:
        return "TiffSlideBackend()"
