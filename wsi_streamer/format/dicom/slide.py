"""The DICOM driver's slide: frames read with exact ranges (one range per tile, its item
headers included) and decoded with the codecs TIFF tiles use, colour as theirs: JPEG coded
as RGB decoded without the YCbCr transform, JPEG 2000 YCbCr without the codestream transform
converted (a JPEG frame that declares its colour space, JFIF or Adobe, is decoded as it
declares). Thread-safe and stateless beyond the structure (the tile tables are in it)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

from ...errors import AssociatedImageNotFound, DecodeError, LimitExceeded, TileOutOfBounds
from ...io.range_reader import RangeReader, read_ranges
from ...limits import MAX_ASSOCIATED_PIXELS
from ..base import PyramidGeometry
from ..contract import LevelTables
from ..jp2k import decode_jp2k
from ..jpeg_tiles import LevelJpeg, decode_tile_jpeg, level_jpeg
from .frames import frame_data
from .structure import JP2K, JPEG, NATIVE, DicomImage, DicomStructure

BACKGROUND = (255, 255, 255)
_JPEG = {rgb: level_jpeg(None, rgb) for rgb in (False, True)}  # no shared tables in DICOM


class DicomSlide(PyramidGeometry):
    """A ``contract.SlideReader`` over the driver's ``DicomStructure``."""

    def __init__(self, reader: RangeReader, structure: DicomStructure) -> None:
        self.reader = reader
        self.structure = structure
        self.info = structure.info

    @property
    def identity(self) -> str:
        return self.reader.identity

    @property
    def cost_bytes(self) -> int:
        """The tile tables (16 bytes per tile), held from the open."""
        images = [*self.structure.levels, *(i for _, i in self.structure.associated)]
        return sum(len(image.tiles) for image in images)

    def level_tables(self) -> LevelTables:
        return {}  # everything is in the structure

    def adopt_level_tables(self, tables: LevelTables) -> None:
        return None

    def tile_range(self, level: int, x: int, y: int) -> tuple[int, int]:
        """``(offset, length)`` of tile (x, y)'s frame items; length 0 for a missing tile."""
        self.level(level)
        return _tile_range(self.structure.levels[level], x, y, level)

    def read_raw_tiles(self, level: int, tiles: Sequence[tuple[int, int]]) -> list[bytes]:
        """Each tile's frame bytes (empty for a missing one), in order: one exact range per
        tile, fetched together (``read_exact_many`` where the reader has it)."""
        ranges = [self.tile_range(level, x, y) for x, y in tiles]
        wanted = [r for r in ranges if r[1]]
        fetched = iter(read_ranges(self.reader, wanted) if wanted else [])
        native = self.structure.levels[level].codec == NATIVE
        return [_payload(next(fetched), native) if n else b"" for _, n in ranges]

    def tile_images(self, level: int, tiles: Sequence[tuple[int, int]],
                    reduce_to: tuple[int, int] | None = None) -> Iterator[Image.Image]:
        image = self.structure.levels[level] if 0 <= level < self.level_count else None
        for data in self.read_raw_tiles(level, tiles):
            assert image is not None  # read_raw_tiles raised InvalidLevel otherwise
            yield decode_frame(image, data, reduce_to)

    def associated_image(self, name: str) -> Image.Image:
        image = dict(self.structure.associated).get(name)
        if image is None:
            raise AssociatedImageNotFound(self.identity, name)
        if image.width * image.height > MAX_ASSOCIATED_PIXELS:
            raise LimitExceeded("MAX_ASSOCIATED_PIXELS", f"the {name} image is "
                                f"{image.width}x{image.height}")
        grid = [(x, y) for y in range(image.tiles_y) for x in range(image.tiles_x)]
        ranges = [_tile_range(image, x, y, -1) for x, y in grid]
        wanted = [r for r in ranges if r[1]]
        fetched = iter(read_ranges(self.reader, wanted) if wanted else [])
        canvas = Image.new("RGB", (image.width, image.height), BACKGROUND)
        for (x, y), (_, n) in zip(grid, ranges, strict=True):
            if n:
                tile = decode_frame(image, _payload(next(fetched), image.codec == NATIVE), None)
                canvas.paste(tile, (x * image.tile_width, y * image.tile_height))
        return canvas

    def icc_profile(self) -> bytes | None:
        return self.structure.icc_profile

    def close(self) -> None:
        close = getattr(self.reader, "close", None)
        if close is not None:
            close()


def _payload(items: bytes, native: bool) -> bytes:
    return items if native else frame_data(items)


def _tile_range(image: DicomImage, x: int, y: int, level: int) -> tuple[int, int]:
    if not (0 <= x < image.tiles_x and 0 <= y < image.tiles_y):
        raise TileOutOfBounds(level, x, y, image.tiles_x, image.tiles_y)
    start, end = (int(v) for v in image.tile_table()[y * image.tiles_x + x])
    return (start, end - start) if end > start else (0, 0)


def declares_colour(frame: bytes) -> bool:
    """Whether a JPEG frame names its colour space itself (JFIF APP0 or Adobe APP14 before
    its frame header): writers label YCbCr JFIF frames Photometric RGB, and the stream is
    what the codec wrote, so it is decoded as it says (as wsidicom and libjpeg do)."""
    at = 2
    while at + 4 <= len(frame) and frame[at] == 0xFF:
        marker = frame[at + 1]
        if marker in (0xE0, 0xEE):
            return True
        if marker in (0xC0, 0xC1, 0xC2, 0xDA):
            return False
        at += 2 + int.from_bytes(frame[at + 2 : at + 4], "big")
    return False


def decode_frame(image: DicomImage, data: bytes,
                 reduce_to: tuple[int, int] | None) -> Image.Image:
    """One frame as a full-size RGB tile (white for a missing one; with ``reduce_to`` a JPEG
    frame may come back smaller, as ``SlideReader.tile_images`` allows)."""
    size = (image.tile_width, image.tile_height)
    if not data:
        return Image.new("RGB", size, BACKGROUND)
    if image.codec == JPEG:
        jpeg: LevelJpeg = _JPEG[image.rgb and not declares_colour(data)]
        tile = decode_tile_jpeg(jpeg, data, size, reduce_to)
    elif image.codec == JP2K:
        tile = decode_jp2k(data, size, image.ycbcr)
    else:
        if len(data) != size[0] * size[1] * 3:
            raise DecodeError(f"native frame of {len(data)} bytes for {size[0]}x{size[1]} RGB")
        tile = Image.fromarray(np.frombuffer(data, np.uint8).reshape(size[1], size[0], 3),
                               "RGB")
    if reduce_to is None and tile.size != size:
        padded = Image.new("RGB", size, BACKGROUND)
        padded.paste(tile, (0, 0))
        tile = padded
    return tile
