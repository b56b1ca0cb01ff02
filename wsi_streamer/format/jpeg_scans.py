"""The decode cost a JPEG stream asks for, counted before it is decoded (issue 26).

libjpeg-turbo decodes every scan of a progressive stream, and a scan whose end-of-band runs
cover every block costs 12 bytes on disk but a full pass over its components when decoded.
``check_scans`` walks the whole stream (header segments by their lengths, entropy-coded data
searched for the next marker at C speed with a regular expression, as libjpeg's
``next_marker`` does: 0xFF00 is stuffing, RSTn and fill bytes are skipped) and refuses it with
``LimitExceeded`` once its scans, the component pixels its scans cover or its segments pass
the bounds in ``limits``. It stops at the first bound exceeded, so its cost is bounded too:
at most ``MAX_JPEG_SEGMENTS`` Python steps plus one C search over the bytes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import LimitExceeded
from ..limits import MAX_JPEG_SCAN_PIXELS, MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS

# 0xFF then a marker code: not 0x00 (stuffing), not RSTn (0xD0-0xD7), not 0xFF (fill).
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_SOS, _EOI, _TEM, _DQT = 0xDA, 0xD9, 0x01, 0xDB
_COLOUR = {0xE0, 0xEE}  # APP0 (JFIF), APP14 (Adobe)


def _frame_pixels(segment: bytes) -> Mapping[int, int]:
    """``_component_pixels``, cached for frame headers of up to 4 components (the tiles of a
    level share a handful: a third of the walk's time otherwise); a longer (hostile) header
    is computed, not kept. Callers only read the mapping."""
    return _cached_pixels(segment) if len(segment) <= _CACHED_SOF_BYTES else (
        _component_pixels(segment))


def _component_pixels(segment: bytes) -> Mapping[int, int]:
    """Pixels (whole 8x8 blocks) of each component of an SOF segment's payload, by id
    (ITU T.81 A.1.1: a component's size is the frame's scaled by its sampling factors)."""
    if len(segment) < 6:
        return {}
    height = int.from_bytes(segment[1:3], "big")
    width = int.from_bytes(segment[3:5], "big")
    count = segment[5]
    comps = [(segment[6 + 3 * i], segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 15)
             for i in range(count) if 8 + 3 * i < len(segment)]
    hmax = max((h for _, h, _ in comps), default=1) or 1
    vmax = max((v for _, _, v in comps), default=1) or 1
    return {ident: _ceil(_ceil(width * h, hmax), 8) * _ceil(_ceil(height * v, vmax), 8) * 64
            for ident, h, v in comps}


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


_CACHED_SOF_BYTES = 6 + 3 * 4
_cached_pixels = functools.lru_cache(maxsize=256)(_component_pixels)


@dataclass(frozen=True, slots=True)
class StreamScan:
    """What one walk of a stream found: ``scans`` and the component pixels they cover
    (``work``), its marker ``segments`` (plus those counted before it), the first frame
    header's ``(width, height, components)`` (None without one) and which segments came before
    the first SOS: quantisation tables (``dqt``: the stream is complete, not abbreviated) and
    JFIF/Adobe segments (``colour``: APP0 or APP14, which declare a colour space)."""

    scans: int
    work: int
    segments: int
    frame: tuple[int, int, int] | None
    dqt: bool
    colour: bool


def check_scans(stream: bytes) -> tuple[int, int]:
    """``(scans, component pixels summed over the scans)`` of a JPEG stream (after SOI).

    Raises ``LimitExceeded`` at the first bound exceeded (``MAX_JPEG_SCANS``,
    ``MAX_JPEG_SCAN_PIXELS``, ``MAX_JPEG_SEGMENTS``), before anything is decoded."""
    found = scan_stream(stream)
    return found.scans, found.work


def scan_stream(stream: bytes, segments: int = 0) -> StreamScan:
    """``check_scans``' walk, summarised (``StreamScan``). ``segments`` are marker segments
    already counted against ``MAX_JPEG_SEGMENTS`` for this stream (a tile's JPEGTables, which
    are walked once per level)."""
    pixels: Mapping[int, int] = {}
    scans = work = largest = 0
    frame: tuple[int, int, int] | None = None
    dqt = colour = False
    pos = 2  # after SOI (checked by the caller's header walk)
    while True:
        found = _MARKER.search(stream, pos)
        if found is None:
            break
        start = found.start()
        marker = stream[start + 1]
        if marker == _EOI:
            break
        if marker == _TEM:
            pos = start + 2
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise LimitExceeded("MAX_JPEG_SEGMENTS", f"JPEG stream has more than "
                                f"{MAX_JPEG_SEGMENTS} marker segments")
        end = start + 2 + int.from_bytes(stream[start + 2 : start + 4], "big")
        if marker in _SOF:
            payload = stream[start + 4 : end]
            pixels = _frame_pixels(payload)
            largest = max(pixels.values(), default=0)
            if frame is None and not scans and len(payload) >= 6:
                frame = (int.from_bytes(payload[3:5], "big"),
                         int.from_bytes(payload[1:3], "big"), payload[5])
        elif marker == _SOS:
            scans += 1
            count = stream[start + 4] if start + 4 < len(stream) else 0
            ids = stream[start + 5 : start + 5 + 2 * count : 2]
            work += sum(pixels.get(i, largest) for i in ids)
            _check(scans, work)
        elif not scans:
            dqt = dqt or marker == _DQT
            colour = colour or marker in _COLOUR
        pos = max(end, start + 2)
    return StreamScan(scans, work, segments, frame, dqt, colour)


def _check(scans: int, work: int) -> None:
    if scans > MAX_JPEG_SCANS:
        raise LimitExceeded("MAX_JPEG_SCANS", f"JPEG stream has more than {MAX_JPEG_SCANS} "
                            f"scans (counting stopped at scan {scans})")
    if work > MAX_JPEG_SCAN_PIXELS:
        raise LimitExceeded("MAX_JPEG_SCAN_PIXELS", f"JPEG stream's {scans} scans cover "
                            f"{work} component pixels, more than {MAX_JPEG_SCAN_PIXELS}")

