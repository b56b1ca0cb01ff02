"""Format detection from the first IFD: Aperio SVS by ImageDescription, NDPI refused, else
generic pyramidal TIFF. Produces the ``SlideStructure`` the slide reader serves."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedFormat
from ..io.range_reader import RangeReader
from . import generic_tiff, svs
from .levels import LevelInfo, build_pyramid
from .tiff.chain import read_ifd_chain
from .tiff.header import HEADER_SIZE, TiffFormat, parse_header
from .tiff.ifd import Ifd
from .tiff.spans import Spans
from .tiff.tags import Tag

NDPI_FORMAT_FLAG = 65420
# The first reads of an open, fetched concurrently: Aperio keeps IFD 0 (and level 0's arrays)
# at the head and the other IFDs near the end; libvips ends with the small levels' IFDs.
OPEN_HEAD = 256 * 1024
OPEN_TAIL = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SlideStructure:
    """Everything parsed at open time; small, picklable, keyed by the reader identity."""

    format_name: str
    vendor: str
    tiff: TiffFormat
    levels: tuple[LevelInfo, ...]
    properties: tuple[tuple[str, str], ...]
    mpp_x: float | None
    mpp_y: float | None
    magnification: float | None


def plan_open_reads(size: int) -> list[tuple[int, int]]:
    """The head and tail ranges read (concurrently) before walking the IFD chain; the same
    as ``Storage.open_probed(id, OPEN_HEAD, OPEN_TAIL)`` returns."""
    head = min(size, OPEN_HEAD)
    tail = min(size - head, OPEN_TAIL)
    return [(0, head)] + ([(size - tail, tail)] if tail > 0 else [])


def parse_structure(reader: RangeReader) -> SlideStructure:
    """Parse a TIFF-based slide; ``UnsupportedFormat`` (with the reason) for anything else.
    Bytes are read as exact ranges (through the block cache when ``reader`` is one)."""
    if reader.size < 8:
        raise UnsupportedFormat("not a TIFF file (too short)")
    spans = Spans(reader)
    spans.fetch(plan_open_reads(reader.size))
    fmt, first = parse_header(spans.read(0, min(HEADER_SIZE, reader.size)))
    ifds = read_ifd_chain(spans, fmt, first)
    return describe(fmt, ifds)


def describe(fmt: TiffFormat, ifds: tuple[Ifd, ...]) -> SlideStructure:
    base = ifds[0]
    if base.entry(NDPI_FORMAT_FLAG) is not None:
        raise UnsupportedFormat("Hamamatsu NDPI is not supported")
    description = base.text(Tag.IMAGE_DESCRIPTION)
    props = {"tiff.ImageDescription": description[:4096]} if description else {}
    for tag, name in ((Tag.MAKE, "Make"), (Tag.MODEL, "Model"), (Tag.SOFTWARE, "Software")):
        if base.text(tag):
            props[f"tiff.{name}"] = base.text(tag)
    if svs.is_aperio(description):
        props.update(svs.parse_description(description))
        mpp_x, mpp_y, magnification = svs.scan_properties(props)
        levels = build_pyramid(ifds, svs.is_associated)
        return SlideStructure(svs.FORMAT_NAME, "aperio", fmt, levels, tuple(props.items()),
                              mpp_x, mpp_y, magnification)
    levels = build_pyramid(ifds, generic_tiff.is_associated)
    mpp_x, mpp_y = generic_tiff.resolution_mpp(base)
    return SlideStructure(generic_tiff.FORMAT_NAME, "generic-tiff", fmt, levels,
                          tuple(props.items()), mpp_x, mpp_y, None)
