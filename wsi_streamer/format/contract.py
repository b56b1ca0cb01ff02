"""The two contracts of the format layer: ``SlideReader`` (an open slide, whatever its format)
and ``FormatDriver`` (how a format is recognised, parsed and opened). Drivers implement them
without importing each other; ``format.drivers`` is the table that picks one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..io.range_reader import RangeReader
from .info import LevelGeometry, SlideInfo
from .spans import Spans

# Per-level state another process may adopt (``level_tables``): for TIFF the tile offset and
# byte-count arrays and the JPEGTables; other drivers keep none.
LevelTables = dict[int, tuple[np.ndarray, np.ndarray, bytes | None]]


class SlideReader(Protocol):
    """An open slide. Thread-safe. Levels are ordered largest first; level 0 is full size."""

    @property
    def identity(self) -> str: ...
    @property
    def format_name(self) -> str: ...
    @property
    def info(self) -> SlideInfo: ...
    @property
    def levels(self) -> tuple[LevelGeometry, ...]: ...
    @property
    def level_count(self) -> int: ...
    @property
    def dimensions(self) -> tuple[int, int]: ...
    @property
    def properties(self) -> dict[str, str]: ...

    def level(self, level: int) -> LevelGeometry:
        """The level's geometry; ``InvalidLevel`` outside ``0..level_count-1``."""
        ...

    def best_level_for_downsample(self, downsample: float) -> int: ...

    @property
    def cost_bytes(self) -> int:
        """Bytes held beyond the description (for TIFF: offset arrays loaded so far)."""
        ...

    def level_tables(self) -> LevelTables:
        """Per-level state loaded so far, for another process (``adopt_level_tables``)."""
        ...

    def adopt_level_tables(self, tables: LevelTables) -> None:
        """Start with state saved by ``level_tables`` for the same identity."""
        ...

    def tile_images(self, level: int, tiles: Sequence[tuple[int, int]],
                    reduce_to: tuple[int, int] | None = None) -> Iterator[Image.Image]:
        """Decoded RGB tiles of ``level``, full tile size (white past the level's edge), in
        the order asked, decoded one at a time as they are taken (memory: one tile), their
        bytes fetched concurrently first. With ``reduce_to`` each tile
        may come back smaller (JPEG DCT scaling), down to that size at the least."""
        ...

    def read_tile(self, level: int, x: int, y: int) -> Image.Image:
        """Decoded RGB tile cropped to the level's bounds; ``TileOutOfBounds`` outside."""
        ...

    def associated_image(self, name: str) -> Image.Image:
        """The label, macro or thumbnail named in ``info.associated``, as RGB;
        ``AssociatedImageNotFound`` for another name, ``LimitExceeded`` when too large."""
        ...

    def icc_profile(self) -> bytes | None:
        """The scanner's ICC colour profile (read once), None when the slide has none."""
        ...

    def close(self) -> None:
        """Release file descriptors; reading again afterwards reopens (same content only)."""
        ...


class FormatDriver(Protocol):
    """One slide format: a module and one entry in ``format.drivers``.

    ``sniff`` looks at the first bytes only. ``parse`` reads what it needs through ``source``
    (the reads of the open, ``Spans``: the head and tail are already there) and returns the
    driver's private structure, which ``encode``/``decode`` turn into JSON-ready data for the
    shared cache (checked field by field on the way back: ``records.Doc``). ``open`` makes the
    ``SlideReader`` from a reader and that structure. Refusals are ``UnsupportedFormat`` with
    the reason."""

    name: str
    label: str  # for people: "TIFF/BigTIFF", "OpenSlide"
    extensions: tuple[str, ...]  # file names a local folder lists and serves for this driver
    recognises: tuple[str, ...]  # more names it opens to tell why it refuses them (NDPI)

    def sniff(self, head: bytes) -> bool: ...
    def parse(self, source: Spans) -> Any: ...
    def info(self, structure: Any) -> SlideInfo: ...
    def open(self, reader: RangeReader, structure: Any) -> SlideReader: ...
    def encode(self, structure: Any) -> dict[str, Any]: ...
    def decode(self, doc: dict[str, Any]) -> Any: ...
