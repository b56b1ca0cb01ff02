"""Slide backends: ``NativeBackend`` (our parser over range requests and the block cache),
``OpenSlideBackend`` (the optional extra, local files), ``TiffSlideBackend`` (wsistream's name,
read by the native reader) and ``SlideBackend``, wsistream's extension point (``base``)."""

from .base import BackendSlide, SlideBackend, StreamingBackend
from .native import NativeBackend, NativeSlide
from .openslide import OpenSlideBackend
from .tiffslide import TiffSlideBackend

__all__ = ["BackendSlide", "NativeBackend", "NativeSlide", "OpenSlideBackend", "SlideBackend",
           "StreamingBackend", "TiffSlideBackend"]
