"""The TIFF driver's slide: a tiled TIFF (SVS or generic pyramid) over a ``RangeReader``: raw
tiles with exact byte ranges and decoded tiles cropped to the level (regions: ``slide.region``).

Thread-safe: one instance serves every thread; per-level offset arrays are loaded once, on
the first tile of that level, under a per-level lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

from ...errors import AssociatedImageNotFound, InvalidTiff, TileOutOfBounds
from ...io.range_reader import RangeReader
from ..base import PyramidGeometry
from ..contract import LevelTables
from ..jp2k import decode_jp2k
from ..jpeg_tiles import LevelJpeg, decode_tile_jpeg, level_jpeg
from .ifd import check_value_size, decode_array, read_fields
from .levels import TiffLevel
from .strips import read_strip_image
from .structure import TiffStructure
from .tags import JPEG, PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR

BACKGROUND = (255, 255, 255)


def max_tile_bytes(level: TiffLevel) -> int:
    """Largest plausible compressed tile: 4x the raw pixels plus 1 MiB of headroom."""
    return 4 * level.tile_width * level.tile_height * 3 + (1 << 20)


class TiffSlide(PyramidGeometry):
    """A ``contract.SlideReader`` over the driver's ``TiffStructure``."""

    def __init__(self, reader: RangeReader, structure: TiffStructure) -> None:
        self.reader = reader
        self.structure = structure
        self.info = structure.info
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._tables: dict[int, bytes | None] = {}
        self._jpeg: dict[int, LevelJpeg] = {}  # per level: its tables parsed once
        self._locks = [threading.Lock() for _ in structure.levels]
        self._icc: bytes | None = None

    @property
    def identity(self) -> str:
        return self.reader.identity

    # --- raw tiles ---------------------------------------------------------------------------
    def _tile_arrays(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        arrays = self._arrays.get(level)
        if arrays is not None:
            return arrays
        with self._locks[level]:
            arrays = self._arrays.get(level)
            if arrays is None:
                info = self.structure.levels[level]
                fmt = self.structure.tiff
                entries = [info.tile_offsets, info.tile_byte_counts]
                if info.jpeg_tables is not None:
                    check_value_size(info.jpeg_tables, f"level {level}")
                    entries.append(info.jpeg_tables)
                # Exact ranges, all in one round trip (neighbours coalesced by the cache).
                raw = read_fields(self.reader, entries)
                if info.jpeg_tables is not None:
                    self._tables[level] = raw[2]
                arrays = (decode_array(fmt, info.tile_offsets, raw[0]),
                          decode_array(fmt, info.tile_byte_counts, raw[1]))
                self._arrays[level] = arrays
        return arrays

    @property
    def cost_bytes(self) -> int:
        """Bytes this slide holds in memory beyond its structure: the tile offset and
        byte-count arrays and JPEGTables of the levels loaded so far (grows on the first tile
        of each level; at most 16 bytes per tile of the slide plus the tables). For a registry
        that bounds open slides by bytes."""
        arrays = sum(o.nbytes + c.nbytes for o, c in list(self._arrays.values()))
        tables = sum(len(t) for t in list(self._tables.values()) if t is not None)
        return arrays + tables

    def level_tables(self) -> LevelTables:
        """The offset and byte-count arrays (and JPEGTables) of every level loaded so far, so
        another process can start with them (``adopt_level_tables``) instead of reading."""
        return {level: (*arrays, self._tables.get(level))
                for level, arrays in list(self._arrays.items())}

    def adopt_level_tables(self, tables: LevelTables) -> None:
        """Use arrays saved by ``level_tables`` for the same identity; checked for shape."""
        for level, (offsets, counts, jpeg_tables) in tables.items():
            if not 0 <= level < len(self.structure.levels):
                continue
            info = self.structure.levels[level]
            if len(offsets) != info.tile_count or len(counts) != info.tile_count:
                continue
            with self._locks[level]:
                if level not in self._arrays:
                    if jpeg_tables is not None:
                        self._tables[level] = jpeg_tables
                    self._arrays[level] = (offsets, counts)

    def tile_range(self, level: int, x: int, y: int) -> tuple[int, int]:
        """``(offset, length)`` of tile (x, y); length 0 for a sparse (absent) tile."""
        self.level(level)  # InvalidLevel outside the pyramid
        info = self.structure.levels[level]
        if not (0 <= x < info.tiles_x and 0 <= y < info.tiles_y):
            raise TileOutOfBounds(level, x, y, info.tiles_x, info.tiles_y)
        offsets, counts = self._tile_arrays(level)
        index = y * info.tiles_x + x
        offset, length = int(offsets[index]), int(counts[index])
        if length == 0 or offset == 0:
            return 0, 0
        if length > max_tile_bytes(info) or offset + length > self.reader.size:
            raise InvalidTiff(f"tile ({x}, {y}) of level {level}: {length} bytes at {offset} "
                              f"(file is {self.reader.size} bytes)")
        return offset, length

    def read_raw_tile(self, level: int, x: int, y: int) -> bytes:
        """The tile's stored bytes (empty for a sparse tile), exactly one range read."""
        return self.read_raw_tiles(level, [(x, y)])[0]

    def read_raw_tiles(self, level: int, tiles: Sequence[tuple[int, int]]) -> list[bytes]:
        """The stored bytes of each tile (empty for a sparse one), in order: one exact range
        each, fetched together (neighbours coalesced and groups concurrent where the reader
        can: ``read_exact_many``), one block-store lookup per tile."""
        ranges = [self.tile_range(level, tx, ty) for tx, ty in tiles]
        wanted = [r for r in ranges if r[1]]
        many = getattr(self.reader, "read_exact_many", None)
        if many is not None:
            fetched = iter(many(wanted) if wanted else [])
        else:
            read_exact = getattr(self.reader, "read_exact", None)
            read = read_exact if read_exact is not None else self.reader.read
            fetched = iter([read(o, n) for o, n in wanted])
        return [next(fetched) if n else b"" for _, n in ranges]

    # --- decoded tiles -----------------------------------------------------------------------
    def tile_images(self, level: int, tiles: Sequence[tuple[int, int]],
                    reduce_to: tuple[int, int] | None = None) -> Iterator[Image.Image]:
        """Decoded tiles in order, one at a time as they are taken, from the stored bytes of
        all of them, fetched first (``read_raw_tiles``)."""
        for data in self.read_raw_tiles(level, tiles):
            yield self.decode_tile(level, data, reduce_to)

    def decode_tile(self, level: int, data: bytes,
                    reduce_to: tuple[int, int] | None = None) -> Image.Image:
        """Decode stored tile bytes of ``level`` to a full-size (uncropped) RGB tile."""
        self.level(level)
        info = self.structure.levels[level]
        size = (info.tile_width, info.tile_height)
        if not data:
            return Image.new("RGB", size, BACKGROUND)
        if info.compression == JPEG:
            image = decode_tile_jpeg(self._level_jpeg(level), data, size, reduce_to)
        else:
            ycbcr = info.compression == 33003 or (
                info.compression == 34712 and info.photometric == PHOTOMETRIC_YCBCR)
            image = decode_jp2k(data, size, ycbcr)
        if reduce_to is None and image.size != size:
            padded = Image.new("RGB", size, BACKGROUND)
            padded.paste(image, (0, 0))
            image = padded
        return image

    def _level_jpeg(self, level: int) -> LevelJpeg:
        """The level's JPEGTables parsed once (``jpeg_tiles.level_jpeg``); threads that race
        on the first tile parse the same bytes and keep one result."""
        found = self._jpeg.get(level)
        if found is None:
            self._tile_arrays(level)  # loads the level's JPEGTables too
            rgb = self.structure.levels[level].photometric == PHOTOMETRIC_RGB
            found = self._jpeg.setdefault(level, level_jpeg(self._tables.get(level), rgb))
        return found

    def associated_image(self, name: str) -> Image.Image:
        image = next((a for a in self.structure.associated if a.name == name), None)
        if image is None:
            raise AssociatedImageNotFound(self.identity, name)
        return read_strip_image(self.reader, self.structure.tiff, image)

    def icc_profile(self) -> bytes | None:
        entry = self.structure.icc_profile
        if entry is None:
            return None
        if self._icc is None:
            self._icc = read_fields(self.reader, [entry])[0]
        return self._icc

    def close(self) -> None:
        """Release the reader's resources (a local file descriptor); a later read reopens."""
        close = getattr(self.reader, "close", None)
        if close is not None:
            close()
