"""The slide API: ``SlideReader`` (the contract) and ``open_slide`` (from a URL-like source or
a ``RangeReader``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..format.detect import SlideStructure, parse_structure
from ..format.levels import LevelInfo
from ..format.tiled import TiffSlide
from ..io.block_cache import BlockCache, BlockStore
from ..io.local import LocalReader
from ..io.range_reader import RangeReader
from ..io.s3 import S3Storage


class SlideReader(Protocol):
    """An open slide. Thread-safe. Levels are ordered largest first; level 0 is full size."""

    @property
    def identity(self) -> str: ...
    @property
    def format_name(self) -> str: ...
    @property
    def structure(self) -> SlideStructure: ...
    @property
    def levels(self) -> tuple[LevelInfo, ...]: ...
    @property
    def level_count(self) -> int: ...
    @property
    def dimensions(self) -> tuple[int, int]: ...
    @property
    def properties(self) -> dict[str, str]: ...

    def level(self, level: int) -> LevelInfo:
        """The level's geometry; ``InvalidLevel`` outside ``0..level_count-1``."""
        ...

    def best_level_for_downsample(self, downsample: float) -> int: ...

    def tile_range(self, level: int, x: int, y: int) -> tuple[int, int]:
        """``(offset, length)`` of the stored tile; length 0 when the tile is absent."""
        ...

    def prefetch_tiles(self, level: int, tiles: Sequence[tuple[int, int]]) -> None: ...

    @property
    def cost_bytes(self) -> int:
        """Bytes held beyond the structure: the offset arrays and JPEGTables loaded so far."""
        ...

    def level_tables(self) -> dict[int, tuple[np.ndarray, np.ndarray, bytes | None]]:
        """Tile offset/byte-count arrays (and JPEGTables) of the levels loaded so far."""
        ...

    def adopt_level_tables(self, tables: dict[int, tuple[np.ndarray, np.ndarray,
                                                         bytes | None]]) -> None:
        """Start with arrays saved by ``level_tables`` for the same identity."""
        ...

    def read_raw_tile(self, level: int, x: int, y: int) -> bytes:
        """Stored tile bytes; ``TileOutOfBounds`` outside the grid."""
        ...

    def decode_tile(self, level: int, data: bytes,
                    reduce_to: tuple[int, int] | None = None) -> Image.Image: ...

    def read_tile(self, level: int, x: int, y: int) -> Image.Image:
        """Decoded RGB tile cropped to the level's bounds."""
        ...

    def close(self) -> None:
        """Release file descriptors; reading again afterwards reopens (same content only)."""
        ...


def open_slide(source: str | RangeReader, *, store: BlockStore | None = None,
               structure: SlideStructure | None = None, **storage_options: Any) -> SlideReader:
    """Open a slide from ``s3://bucket/key``, a local file path or a ``RangeReader``.

    Reads go through a block cache (``store``, or a private one). ``structure`` skips parsing
    when the caller already knows it for this reader's identity. ``storage_options`` go to
    ``S3Storage`` (``endpoint_url``, ``region``, ``profile_name``, ``anonymous``,
    ``requester_pays``, timeouts); credentials come from boto3's usual chain. Raises
    ``SlideNotFound``, ``UnsupportedFormat`` (with the reason) or a ``StorageError``."""
    if isinstance(source, str):
        if source.startswith("s3://"):
            bucket, _, key = source[5:].partition("/")
            reader: RangeReader = S3Storage(bucket, **storage_options).open(key)
        else:
            reader = LocalReader(source, source)
    else:
        reader = source
    cached = reader if isinstance(reader, BlockCache) else BlockCache(reader, store)
    return TiffSlide(cached, structure or parse_structure(cached))
