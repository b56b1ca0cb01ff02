"""JPEG tile streams in TIFF: merging ``JPEGTables`` into abbreviated streams, forcing the colour
space from Photometric (Aperio's RGB-coded tiles), and decoding with Pillow (libjpeg-turbo)."""

from __future__ import annotations

import io
import re
import warnings

from PIL import Image

from ..errors import DecodeError, LimitExceeded
from ..limits import MAX_JPEG_SEGMENTS
from .jpeg_scans import check_scans

SOI, EOI = b"\xff\xd8", b"\xff\xd9"
# APP14 "Adobe", version 100, flags 0/0, transform 0: components are RGB, not YCbCr.
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn have no length field
_SOS, _DQT, _APP0, _APP14 = 0xDA, 0xDB, 0xE0, 0xEE
_FILL = re.compile(rb"\xff+")


def header_segments(stream: bytes) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of each segment from after SOI up to and including SOS.

    Raises ``DecodeError`` for a stream that does not start with SOI or whose header is
    truncated, ``LimitExceeded`` past ``MAX_JPEG_SEGMENTS`` segments."""
    if not stream.startswith(SOI):
        raise DecodeError("tile data is not a JPEG stream (no SOI marker)")
    segments = []
    pos, steps = 2, 0
    while pos + 4 <= len(stream):
        if stream[pos] != 0xFF:
            raise DecodeError(f"malformed JPEG header at byte {pos}")
        steps += 1
        if steps > MAX_JPEG_SEGMENTS:
            raise LimitExceeded("MAX_JPEG_SEGMENTS", f"JPEG header has more than "
                                f"{MAX_JPEG_SEGMENTS} marker segments")
        marker = stream[pos + 1]
        if marker == 0xFF:  # fill bytes: skip the run at C speed
            fill = _FILL.match(stream, pos)
            pos = fill.end() - 1 if fill is not None else pos + 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(stream[pos + 2 : pos + 4], "big")
        segments.append((marker, pos, end))
        if marker == _SOS or marker == 0xD9:
            return segments
        pos = end
    raise DecodeError("truncated JPEG header")


def complete_stream(tile: bytes, tables: bytes | None, rgb: bool) -> bytes:
    """Return a self-contained JPEG stream for a TIFF tile.

    ``tables`` (the level's ``JPEGTables``) is merged in only when the tile is abbreviated
    (no quantisation tables of its own); complete streams pass through. When ``rgb`` (TIFF
    Photometric=RGB) the components are declared RGB with an Adobe APP14 segment, replacing
    any JFIF/Adobe segment that would make the decoder assume YCbCr."""
    segments = header_segments(tile)
    abbreviated = tables is not None and not any(m == _DQT for m, _, _ in segments)
    if abbreviated and tables is not None:
        if not tables.startswith(SOI):
            raise DecodeError("JPEGTables is not a JPEG tables stream (no SOI marker)")
        body = tables[2:-2] if tables.endswith(EOI) else tables[2:]
        tile = SOI + body + tile[2:]
        if rgb:
            segments = header_segments(tile)
    if not rgb:
        return tile
    kept = [tile[s:e] for m, s, e in segments if m not in (_APP0, _APP14)]
    tail = tile[segments[-1][2]:] if segments else tile[2:]
    return SOI + ADOBE_RGB + b"".join(kept) + tail


def jpeg_size(stream: bytes) -> tuple[int, int]:
    """Width and height declared by the stream's SOF segment."""
    for marker, start, _ in header_segments(stream):
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                      0xCF):
            height = int.from_bytes(stream[start + 5 : start + 7], "big")
            width = int.from_bytes(stream[start + 7 : start + 9], "big")
            return width, height
    raise DecodeError("JPEG stream has no frame header")


def decode_jpeg(stream: bytes, max_size: tuple[int, int],
                reduce_to: tuple[int, int] | None = None) -> Image.Image:
    """Decode a complete stream to an RGB image no larger than ``max_size``.

    ``reduce_to`` lets libjpeg scale by 1/2, 1/4 or 1/8 while decoding (DCT scaling) when the
    caller will downsample anyway; the result is at least that size. A stream whose scans
    would cost more than ``limits`` allow raises ``LimitExceeded`` before decoding
    (``jpeg_scans.check_scans``)."""
    width, height = jpeg_size(stream)
    if width > max_size[0] or height > max_size[1] or width == 0 or height == 0:
        raise DecodeError(f"JPEG tile is {width}x{height}, expected at most "
                          f"{max_size[0]}x{max_size[1]}")
    check_scans(stream)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # Pillow: "Corrupt EXIF data"
            image = Image.open(io.BytesIO(stream), formats=("JPEG",))
            if reduce_to is not None:
                image.draft("RGB", reduce_to)
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"JPEG tile could not be decoded: {exc}") from exc
    return image if image.mode == "RGB" else image.convert("RGB")
