"""The per-tile JPEG path of a TIFF level: its JPEGTables (and, for RGB-coded tiles, the Adobe
segment) parsed once per level into a stream prefix, each tile then walked once (the scan
bounds of ``jpeg_scans``, which also say whether the tile is abbreviated) and decoded by
libjpeg-turbo straight from ``prefix + tile`` (Pillow's decoder, without its Python header
parser). Tiles the prefix does not fit (complete streams that carry JFIF/Adobe segments while
the level is RGB-coded, frames other than 1 or 3 components, levels whose tables hold more
than tables) take ``jpeg.complete_stream`` + ``jpeg.decode_jpeg``: the same pixels, slower.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from PIL import Image

from ..errors import DecodeError
from .jpeg import ADOBE_RGB, EOI, SOI, complete_stream, decode_jpeg, header_segments
from .jpeg_scans import scan_stream

# Segments a JPEGTables stream may hold: DQT, DHT, DAC, DRI, COM, APPn (TIFF TN2 / T.81 B.5).
_TABLE_MARKERS = {0xDB, 0xC4, 0xCC, 0xDD, 0xFE, *range(0xE0, 0xF0)}
_APP0, _APP14 = 0xE0, 0xEE


@dataclass(frozen=True, slots=True)
class LevelJpeg:
    """A level's stream heads: ``abbreviated`` (SOI, the Adobe segment when ``rgb``, the
    level's tables; None when it has no usable JPEGTables) for tiles without tables of their
    own, ``complete`` (SOI and the Adobe segment when ``rgb``) for tiles with them;
    ``segments``: the head's marker segments (Adobe, tables), counted against
    ``MAX_JPEG_SEGMENTS`` with each tile's."""

    abbreviated: bytes | None
    complete: bytes
    segments: int
    rgb: bool
    tables: bytes | None


def level_jpeg(tables: bytes | None, rgb: bool) -> LevelJpeg:
    """Parse a level's ``JPEGTables`` once. Tables that are not a plain tables stream leave
    ``abbreviated`` None: such tiles take ``complete_stream``, which says what is wrong."""
    head = SOI + ADOBE_RGB if rgb else SOI
    if tables is None:
        return LevelJpeg(None, head, int(rgb), rgb, None)
    if not tables.startswith(SOI):  # refused by ``complete_stream``, for tiles that need them
        return LevelJpeg(None, head, int(rgb), rgb, tables)
    body = tables if tables.endswith(EOI) else tables + EOI
    try:
        segments = header_segments(body + b"\0\0")  # the walk reads 4 bytes per marker
    except DecodeError:
        return LevelJpeg(None, head, int(rgb), rgb, tables)  # every tile: the slow path
    tail = segments[-1]
    if tail[0] != 0xD9 or any(m not in _TABLE_MARKERS for m, _, _ in segments[:-1]):
        return LevelJpeg(None, head, int(rgb), rgb, tables)
    kept = [body[s:e] for m, s, e in segments[:-1] if not (rgb and m in (_APP0, _APP14))]
    return LevelJpeg(head + b"".join(kept), head, len(kept) + rgb, rgb, tables)


def decode_tile_jpeg(level: LevelJpeg, tile: bytes, max_size: tuple[int, int],
                     reduce_to: tuple[int, int] | None = None) -> Image.Image:
    """The RGB pixels of one stored tile of ``level``: as ``decode_jpeg(complete_stream(tile,
    tables, rgb), max_size, reduce_to)``, with the same checks (scan bounds, frame size) and
    errors, from one walk of the tile."""
    if not tile.startswith(SOI):
        raise DecodeError("tile data is not a JPEG stream (no SOI marker)")
    found = scan_stream(tile, level.segments)  # the merged stream's count (or above it)
    head = level.complete if found.dqt else level.abbreviated
    frame = found.frame
    if (head is None or (level.rgb and found.colour) or frame is None
            or frame[2] not in (1, 3)):
        return decode_jpeg(complete_stream(tile, level.tables, level.rgb), max_size, reduce_to)
    width, height, components = frame
    if width > max_size[0] or height > max_size[1] or width == 0 or height == 0:
        raise DecodeError(f"JPEG tile is {width}x{height}, expected at most "
                          f"{max_size[0]}x{max_size[1]}")
    scale = 1
    if reduce_to is not None:  # Pillow's ``draft``: the largest of 8, 4, 2 that fits
        fits = min(width // max(1, reduce_to[0]), height // max(1, reduce_to[1]))
        scale = next(s for s in (8, 4, 2, 1) if fits >= s)
    size = (-(-width // scale), -(-height // scale))
    mode = "RGB" if components == 3 else "L"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            image = Image.frombytes(mode, size, head + tile[2:], "jpeg", mode, "", scale, 0)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DecodeError(f"JPEG tile could not be decoded: {exc}") from exc
    return image if mode == "RGB" else image.convert("RGB")
