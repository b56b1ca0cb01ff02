"""The slide API: open a slide anywhere (``s3://bucket/key``, a file, any ``RangeReader``) and
read tiles or regions as pixels, touching only the bytes needed.

    from wsi_streamer.slide import open_slide, read_region
    slide = open_slide("s3://bucket/case.svs")
    image = read_region(slide, 0, x=1000, y=2000, width=512, height=512)  # PIL RGB
"""

from __future__ import annotations

from ..errors import (
    DecodeError,
    InvalidLevel,
    ObjectChanged,
    SlideNotFound,
    StorageConnectionError,
    StorageError,
    TileOutOfBounds,
    UnsupportedFormat,
    WsiError,
)
from ..format.contract import FormatDriver
from ..format.drivers import NATIVE as NATIVE_FORMATS
from ..format.drivers import Parsed
from ..format.info import LevelGeometry, SlideInfo
from .reader import SlideReader, open_slide
from .region import read_level0_anchored, read_region, render_region

LevelInfo = LevelGeometry  # the name before format drivers (0.x)

__all__ = [
    "DecodeError", "FormatDriver", "InvalidLevel", "LevelGeometry", "LevelInfo",
    "NATIVE_FORMATS", "ObjectChanged", "Parsed", "SlideInfo", "SlideNotFound", "SlideReader",
    "StorageConnectionError", "StorageError", "TileOutOfBounds", "UnsupportedFormat",
    "WsiError", "open_slide", "read_level0_anchored", "read_region", "render_region",
]
