"""One DICOM instance's header, parsed by pydicom from a bounded head read (DICOM PS3.10 file
format: preamble, ``DICM``, file meta, data set) up to its Pixel Data element (7FE0,0010),
never the pixels. The read starts at ``io.series.MEMBER_HEAD`` bytes (already held by the
open) and doubles while the header goes on, up to ``MAX_DICOM_HEADER``."""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import Any

from ...errors import LimitExceeded, UnsupportedFormat
from ...io.series import MEMBER_HEAD, Member
from ...limits import MAX_DICOM_HEADER
from ..spans import Spans

PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
UNDEFINED_LENGTH = 0xFFFFFFFF
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed header: the pydicom data set (without pixels), where the Pixel Data element
    starts (series offset of its value: ``value_at``) and its declared length
    (``UNDEFINED_LENGTH`` when encapsulated), and the head bytes read."""

    member: Member
    dataset: Any  # pydicom.Dataset (pydicom is untyped here)
    transfer_syntax: str
    value_at: int
    value_length: int


def is_dicom(head: bytes) -> bool:
    """A DICOM PS3.10 file: 128-byte preamble, then ``DICM``."""
    return head[128:132] == b"DICM"


def read_header(source: Spans, member: Member) -> Header:
    """The header of ``member``; ``UnsupportedFormat`` when it is not DICOM, has no Pixel
    Data or is cut short, ``LimitExceeded`` past ``MAX_DICOM_HEADER``."""
    length = min(member.size, MEMBER_HEAD)
    while True:
        buf = source.read(member.offset, length)
        found = _parse(buf, member)
        if found is not None:
            dataset, at = found
            syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
            explicit = syntax != IMPLICIT_VR_LE
            size = 12 if explicit else 8
            if at + size <= len(buf):
                fmt = "<4x2s2xI" if explicit else "<4xI"
                value_length = struct.unpack_from(fmt, buf, at)[-1]
                return Header(member, dataset, syntax, member.offset + at + size,
                              int(value_length))
        if length >= member.size:
            raise UnsupportedFormat(f"DICOM object {member.name!r}: no Pixel Data in its "
                                    f"{member.size} bytes (truncated, or not an image)")
        if length >= MAX_DICOM_HEADER:
            raise LimitExceeded("MAX_DICOM_HEADER", f"DICOM object {member.name!r}: header "
                                f"longer than {MAX_DICOM_HEADER} bytes")
        length = min(member.size, 2 * length, MAX_DICOM_HEADER)


def _parse(buf: bytes, member: Member) -> tuple[Any, int] | None:
    """The data set and the offset of the Pixel Data tag in ``buf``, None when ``buf`` ends
    before it."""
    try:
        import pydicom  # the [dicom] extra; imported on first use
    except ImportError as exc:
        raise UnsupportedFormat("DICOM slides need pydicom: pip install "
                                "'wsi-streamer[dicom]'") from exc
    if not is_dicom(buf):
        raise UnsupportedFormat(f"{member.name!r} is not a DICOM file (no DICM prefix)")
    fp = io.BytesIO(buf)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(fp, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - pydicom raises many kinds on a cut buffer: read more
        return None
    at = fp.tell()
    if buf[at : at + 4] != PIXEL_DATA_TAG:
        return None
    return dataset, at
