"""Format detection from the first IFD: Aperio SVS by ImageDescription, NDPI refused, else
generic pyramidal TIFF. Produces the ``SlideStructure`` the slide reader serves."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedFormat
from ..io.range_reader import RangeReader
from . import generic_tiff, svs
from .levels import LevelInfo, build_pyramid
from .tiff.header import HEADER_SIZE, TiffFormat, parse_header
from .tiff.ifd import Ifd, read_ifd_chain
from .tiff.tags import Tag

NDPI_FORMAT_FLAG = 65420


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
    """Head and tail ranges worth fetching concurrently before walking the IFD chain: Aperio
    keeps IFD 0 at the head and the rest near the end; libvips puts IFDs at the end."""
    head = min(size, 256 * 1024)
    tail = min(size - head, max(256 * 1024, min(1024 * 1024, size // 256)))
    return [(0, head)] + ([(size - tail, tail)] if tail > 0 else [])


def parse_structure(reader: RangeReader) -> SlideStructure:
    """Parse a TIFF-based slide; ``UnsupportedFormat`` (with the reason) for anything else."""
    prefetch = getattr(reader, "prefetch", None)
    if prefetch is not None:
        prefetch(plan_open_reads(reader.size))
    if reader.size < 8:
        raise UnsupportedFormat("not a TIFF file (too short)")
    fmt, first = parse_header(reader.read(0, min(HEADER_SIZE, reader.size)))
    ifds = read_ifd_chain(reader, fmt, first)
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
