"""DICOM concatenations (PS3.3 C.7.6.16.2.2): one image split over several objects that share
a Concatenation UID, each holding the frames from its Concatenation Frame Offset Number on.
The parts are put in order and checked to follow each other, so that the image is read as one
instance whose frames are theirs end to end (``instance.describe``)."""

from __future__ import annotations

from ...errors import UnsupportedFormat
from ...limits import MAX_MEMBERS
from .header import Header


def concatenations(headers: list[Header]) -> list[list[Header]]:
    """The instances of ``headers``: a header alone, or a concatenation's parts in frame
    order (at the place of its first part). ``UnsupportedFormat`` when the parts do not
    follow each other or some are missing."""
    groups: dict[str, list[Header]] = {}
    order: list[list[Header]] = []
    for header in headers:
        uid = header.dataset.get("ConcatenationUID")
        if not uid:
            order.append([header])
        elif str(uid) in groups:
            groups[str(uid)].append(header)
        else:
            groups[str(uid)] = parts = [header]
            order.append(parts)
    for parts in groups.values():
        _check(parts)
    return order


def _number(header: Header, key: str) -> int:
    try:
        return int(header.dataset.get(key))
    except (TypeError, ValueError):
        raise UnsupportedFormat(f"DICOM {header.member.name!r}: a concatenation part without "
                                f"{key}") from None


def _check(parts: list[Header]) -> None:
    """Sort ``parts`` by frame offset; check their numbers, totals and offsets agree."""
    parts.sort(key=lambda h: _number(h, "ConcatenationFrameOffsetNumber"))
    total = _number(parts[0], "InConcatenationTotalNumber")
    name = parts[0].member.name
    if not 0 < total <= MAX_MEMBERS or len(parts) != total:
        raise UnsupportedFormat(f"DICOM {name!r}: {len(parts)} parts of a concatenation of "
                                f"{total}")
    offset = 0
    for number, part in enumerate(parts, 1):
        if (_number(part, "InConcatenationNumber") != number
                or _number(part, "ConcatenationFrameOffsetNumber") != offset
                or _number(part, "InConcatenationTotalNumber") != total
                or _shape(part) != _shape(parts[0])):
            raise UnsupportedFormat(f"DICOM {part.member.name!r}: concatenation part "
                                    f"{number} of {total} does not follow part {number - 1} "
                                    f"(frame offset {offset} expected)")
        offset += int(part.dataset.get("NumberOfFrames", 1) or 1)



def _shape(header: Header) -> tuple[object, ...]:
    """What every part of one image must share."""
    ds = header.dataset
    return (header.transfer_syntax, *(ds.get(key) for key in (
        "Rows", "Columns", "TotalPixelMatrixRows", "TotalPixelMatrixColumns",
        "PhotometricInterpretation", "DimensionOrganizationType")))
