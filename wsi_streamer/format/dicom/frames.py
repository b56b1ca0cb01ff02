"""Where each frame of an instance lies (DICOM PS3.5 A.4, encapsulated Pixel Data): from the
Extended Offset Table in the header, else the Basic Offset Table (the first item), else one
bounded walk of the item headers. A frame's range is its items (8-byte item headers included:
one read per frame, ``frame_data`` drops them); native (uncompressed) Pixel Data is frames of
fixed size end to end."""

from __future__ import annotations

import struct

import numpy as np

from ...errors import DecodeError, LimitExceeded, UnsupportedFormat
from ...limits import MAX_ITEM_SCAN_BYTES
from ..spans import Spans
from .header import UNDEFINED_LENGTH, Header

ITEM = 0xE000FFFE  # (FFFE,E000) read as a little-endian uint32
SEQUENCE_END = 0xE0DDFFFE  # (FFFE,E0DD)
_SCAN_WINDOW = 256 * 1024


def frame_ranges(source: Spans, header: Header, frames: int, frame_bytes: int
                 ) -> np.ndarray:
    """``(frames, 2)`` int64 series offsets ``[start, end)`` of each frame; ``frame_bytes``:
    the native frame size (uncompressed) or the largest plausible compressed frame.
    ``UnsupportedFormat`` naming what does not add up."""
    member, name = header.member, header.member.name
    end_of_member = member.offset + member.size
    if header.value_length != UNDEFINED_LENGTH:  # native: frames end to end
        if header.value_length < frames * frame_bytes or (
                header.value_at + frames * frame_bytes > end_of_member):
            raise UnsupportedFormat(f"DICOM {name!r}: {header.value_length} bytes of Pixel "
                                    f"Data for {frames} frames of {frame_bytes} bytes")
        starts = header.value_at + frame_bytes * np.arange(frames, dtype=np.int64)
        return np.stack([starts, starts + frame_bytes], axis=1)
    tag, bot_length = _item(source, header.value_at, end_of_member, name)
    if tag != ITEM or bot_length % 4:
        raise UnsupportedFormat(f"DICOM {name!r}: Pixel Data does not start with an offset "
                                "table item")
    first = header.value_at + 8 + bot_length  # the first frame item's tag
    eot = header.dataset.get("ExtendedOffsetTable")
    if eot is not None:
        offsets = np.frombuffer(bytes(eot), "<u8").astype(np.int64)
        lengths = np.frombuffer(bytes(header.dataset.get("ExtendedOffsetTableLengths", b"")),
                                "<u8").astype(np.int64)
        if len(offsets) != frames or len(lengths) != frames:
            raise UnsupportedFormat(f"DICOM {name!r}: the Extended Offset Table lists "
                                    f"{len(offsets)} frames ({len(lengths)} lengths), the "
                                    f"header says {frames}")
        # Frames end where the next begins; the last after its length (writers differ on
        # whether that length counts the 8-byte item header: both read right).
        ranges = _consecutive(first + offsets, int(lengths[-1]) if frames else 0,
                              end_of_member, name, "Extended")
    elif bot_length:
        if bot_length // 4 != frames:
            raise UnsupportedFormat(f"DICOM {name!r}: the Basic Offset Table lists "
                                    f"{bot_length // 4} frames, the header says {frames}")
        table = source.read(header.value_at + 8, bot_length)
        starts = first + np.frombuffer(table, "<u4").astype(np.int64)
        ranges = _consecutive(starts, frame_bytes, end_of_member, name, "Basic")
    else:
        ranges = _walk(source, first, end_of_member, frames, name)
    if np.any(ranges[:, 0] < first) or np.any(ranges[:, 1] > end_of_member) or np.any(
            ranges[:, 1] - ranges[:, 0] > frame_bytes + 8) or np.any(ranges[:, 1] <= ranges[:, 0]):
        raise UnsupportedFormat(f"DICOM {name!r}: a frame lies outside its object or is "
                                f"larger than {frame_bytes} bytes (a lying offset table?)")
    return ranges


def _consecutive(starts: np.ndarray, last_length: int, end: int, name: str, which: str
                 ) -> np.ndarray:
    """``[start, next start)`` per frame, the last ``last_length`` (+ its item header) long
    at most; ``UnsupportedFormat`` unless the starts increase."""
    if np.any(np.diff(starts) <= 0):
        raise UnsupportedFormat(f"DICOM {name!r}: the {which} Offset Table is not increasing")
    last = min(end, int(starts[-1]) + 8 + last_length)
    return np.stack([starts, np.append(starts[1:], last)], axis=1)


def _item(source: Spans, at: int, end: int, name: str) -> tuple[int, int]:
    if at + 8 > end:
        raise UnsupportedFormat(f"DICOM {name!r}: Pixel Data cut short")
    tag, length = struct.unpack("<II", source.read(at, 8))
    return int(tag), int(length)


def _walk(source: Spans, first: int, end: int, frames: int, name: str) -> np.ndarray:
    """Frames by walking item headers (no offset table): one frame per item, windows of
    ``_SCAN_WINDOW`` read as the walk goes, ``MAX_ITEM_SCAN_BYTES`` at most."""
    if end - first > MAX_ITEM_SCAN_BYTES:
        raise LimitExceeded("MAX_ITEM_SCAN_BYTES", f"DICOM {name!r} has no offset table and "
                            f"{end - first} bytes of frames to walk")
    ranges = np.zeros((frames, 2), np.int64)
    at, count = first, 0
    while True:
        if at + 8 > end:
            raise UnsupportedFormat(f"DICOM {name!r}: Pixel Data ends without a delimiter")
        if not source.covers(at, 8):
            source.fetch([(at, min(_SCAN_WINDOW, end - at))])
        tag, length = _item(source, at, end, name)
        if tag == SEQUENCE_END:
            break
        if tag != ITEM or count >= frames or at + 8 + length > end:
            raise UnsupportedFormat(f"DICOM {name!r}: {count + 1} or more fragments for "
                                    f"{frames} frames and no offset table")
        ranges[count] = (at, at + 8 + length)
        count += 1
        at += 8 + length
    if count != frames:
        raise UnsupportedFormat(f"DICOM {name!r}: {count} fragments for {frames} frames")
    return ranges


def frame_data(items: bytes) -> bytes:
    """The frame's bytes from its items (each ``(FFFE,E000) length value``), up to the
    sequence delimiter or the end; ``DecodeError`` for anything else."""
    parts: list[bytes] = []
    at = 0
    while at + 8 <= len(items):
        tag, length = struct.unpack_from("<II", items, at)
        if tag == SEQUENCE_END:
            break
        if tag != ITEM or at + 8 + length > len(items):
            raise DecodeError("DICOM frame: not a sequence of items (a lying offset table?)")
        parts.append(items[at + 8 : at + 8 + length])
        at += 8 + length
    if not parts:
        raise DecodeError("DICOM frame: no item")
    return parts[0] if len(parts) == 1 else b"".join(parts)
