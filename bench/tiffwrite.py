"""Minimal classic little-endian TIFF writing for benchmark slides, with explicit placement.

``Page`` describes one IFD (tags plus its tile or strip payloads). ``write_tiff`` lays pages
out in a chosen order: payloads are streamed, and each IFD (with its external values, e.g. the
tile offset arrays) goes either right after the header or after a given page's data, so the
Aperio and libvips layouts are both a placement choice.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

SHORT, LONG, RATIONAL, ASCII, UNDEFINED = 3, 4, 5, 2, 7
_SIZES = {SHORT: 2, LONG: 4, RATIONAL: 8, ASCII: 1, UNDEFINED: 1}
_FMT = {SHORT: "H", LONG: "I", RATIONAL: "II"}

TagValue = tuple[int, bytes | str | Sequence[int]]


def encode_jpeg(pixels: np.ndarray, quality: int, rgb: bool) -> bytes:
    """A complete JPEG: RGB-coded 4:4:4 (``rgb``, as Aperio) or YCbCr 4:2:0 (as libvips)."""
    buf = io.BytesIO()
    image = Image.fromarray(pixels)
    if rgb:
        image.save(buf, "JPEG", quality=quality, subsampling=0, keep_rgb=True)
    else:
        image.save(buf, "JPEG", quality=quality, subsampling=2)
    return buf.getvalue()


def split_jpeg(stream: bytes, aperio: bool) -> tuple[bytes, bytes]:
    """``(tables, abbreviated)``: DQT/DHT go to a JPEGTables stream, the rest stays. With
    ``aperio``, APP segments are dropped and component ids become 0/1/2 (no JFIF, no Adobe),
    like Aperio scanners write them."""
    tables, body = [b"\xff\xd8"], [b"\xff\xd8"]
    pos = 2
    while pos < len(stream):
        marker = stream[pos + 1]
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        segment = bytearray(stream[pos : pos + 2 + length])
        if marker == 0xDA:  # SOS: the entropy-coded data follows up to EOI
            if aperio:
                for i in range(segment[4]):
                    segment[5 + 2 * i] = i
            body.append(bytes(segment) + stream[pos + 2 + length :])
            break
        if marker in (0xDB, 0xC4):
            tables.append(bytes(segment))
        elif 0xE0 <= marker <= 0xEF and aperio:
            pass
        else:
            if aperio and marker == 0xC0:
                for i in range(segment[9]):
                    segment[10 + 3 * i] = i
            body.append(bytes(segment))
        pos += 2 + length
    tables.append(b"\xff\xd9")
    return b"".join(tables), b"".join(body)


@dataclass
class Page:
    """One IFD: ``tags`` (code -> (type, value)) and ``chunks`` (tiles or strips, in order).
    ``chunks`` may be a callable producing the payloads lazily (streamed)."""

    tags: dict[int, TagValue]
    chunk_sizes: list[int]
    chunks: Callable[[], Sequence[bytes] | object] | Sequence[bytes]
    tiled: bool = True
    offsets: list[int] = field(default_factory=list)


def _entry_bytes(tag: int, typ: int, value: bytes | str | Sequence[int]) -> tuple[int, bytes]:
    if isinstance(value, str):
        raw = value.encode("latin-1") + b"\0"
    elif isinstance(value, bytes):
        raw = value
    else:
        raw = struct.pack(f"<{len(value)}{_FMT[typ][0]}", *value)
    count = len(raw) // _SIZES[typ]
    return count, raw


def ifd_size(page: Page) -> int:
    """Bytes the IFD takes with its external values (offset arrays not yet known: same size)."""
    return len(ifd_bytes(page, 0, 0, placeholder=True))


def ifd_bytes(page: Page, at: int, next_ifd: int, placeholder: bool = False) -> bytes:
    """The IFD for ``page`` placed at file offset ``at``, external values right after it."""
    tags = dict(page.tags)
    offs = [0] * len(page.chunk_sizes) if placeholder else page.offsets
    if page.tiled:
        tags[324], tags[325] = (LONG, offs), (LONG, page.chunk_sizes)
    else:
        tags[273], tags[279] = (LONG, offs), (LONG, page.chunk_sizes)
    entries = sorted(tags.items())
    head_len = 2 + 12 * len(entries) + 4
    out = bytearray(struct.pack("<H", len(entries)))
    extra = bytearray()
    for tag, (typ, value) in entries:
        count, raw = _entry_bytes(tag, typ, value)
        if len(raw) <= 4:
            out += struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\0")
        else:
            if len(extra) % 2:
                extra += b"\0"
            out += struct.pack("<HHII", tag, typ, count, at + head_len + len(extra))
            extra += raw
    out += struct.pack("<I", next_ifd)
    return bytes(out + extra)


def write_tiff(path: str, pages: list[Page], order: list[tuple[str, int]]) -> dict[int, int]:
    """Write ``pages`` to ``path``. ``order`` lists ``("data", i)`` and ``("ifd", i)`` items in
    file order; the IFD chain follows page index order. Returns ``{page: ifd offset}``."""
    pos = 8
    ifd_at: dict[int, int] = {}
    for kind, i in order:  # pass 1: placement
        if kind == "ifd":
            pos += pos % 2
            ifd_at[i] = pos
            pos += ifd_size(pages[i])
        else:
            pages[i].offsets = []
            for size in pages[i].chunk_sizes:
                pages[i].offsets.append(pos)
                pos += size
    with open(path, "wb") as f:
        f.write(b"II*\0" + struct.pack("<I", ifd_at[0]))
        for kind, i in order:  # pass 2: bytes
            if kind == "ifd":
                if f.tell() % 2:
                    f.write(b"\0")
                nxt = ifd_at.get(i + 1, 0)
                f.write(ifd_bytes(pages[i], ifd_at[i], nxt))
                continue
            chunks = pages[i].chunks
            produced = chunks() if callable(chunks) else chunks
            for expected, data in zip(pages[i].chunk_sizes, produced, strict=True):  # type: ignore[call-overload]
                assert len(data) == expected
                f.write(data)
        assert f.tell() == pos, (f.tell(), pos)
    return ifd_at
