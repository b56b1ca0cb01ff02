"""The TIFF driver: Aperio SVS by ImageDescription, NDPI refused (its 32-bit offsets wrap:
OpenSlide's fallback reads it), else generic pyramidal TIFF / BigTIFF."""

from __future__ import annotations

from typing import Any

from ...errors import UnsupportedFormat
from ...io.range_reader import RangeReader
from ...io.storage import SLIDE_EXTENSIONS
from ...limits import MAX_ICC_BYTES
from ...records import Doc
from ..info import SlideInfo
from ..spans import Spans, open_reads
from . import generic, svs
from .chain import read_ifd_chain
from .codec import decode_structure, encode_structure
from .header import HEADER_SIZE, TiffFormat, parse_header
from .ifd import Ifd, IfdEntry
from .levels import build_pyramid
from .slide import TiffSlide
from .strips import StripImage, strip_image
from .structure import TiffStructure
from .tags import Tag

NDPI_FORMAT_FLAG = 65420
_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF and BigTIFF


def parse_structure(reader: RangeReader) -> TiffStructure:
    """Parse a TIFF-based slide read through ``reader`` (the driver's ``parse`` on a fresh
    set of open reads: head and tail first, concurrently)."""
    return parse(open_reads(reader))


def parse(source: Spans) -> TiffStructure:
    if source.size < 8:
        raise UnsupportedFormat("not a TIFF file (too short)")
    fmt, first = parse_header(source.read(0, min(HEADER_SIZE, source.size)))
    return describe(fmt, read_ifd_chain(source, fmt, first))


def describe(fmt: TiffFormat, ifds: tuple[Ifd, ...]) -> TiffStructure:
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
        return TiffStructure(svs.FORMAT_NAME, "aperio", fmt, levels, tuple(props.items()),
                             mpp_x, mpp_y, magnification,
                             _strip_images(ifds, svs.associated_ifds(ifds)), _icc(base))
    levels = build_pyramid(ifds, generic.is_associated)
    mpp_x, mpp_y = generic.resolution_mpp(base)
    return TiffStructure(generic.FORMAT_NAME, "generic-tiff", fmt, levels,
                         tuple(props.items()), mpp_x, mpp_y, None,
                         _strip_images(ifds, generic.associated_ifds(ifds)), _icc(base))


def _strip_images(ifds: tuple[Ifd, ...], named: list[tuple[str, int]]
                  ) -> tuple[StripImage, ...]:
    found = (strip_image(name, index, ifds[index]) for name, index in named)
    return tuple(image for image in found if image is not None)


def _icc(base: Ifd) -> IfdEntry | None:
    """The ICC profile entry of the full-resolution image, when it has one of a sane size."""
    entry = base.entry(Tag.ICC_PROFILE)
    if entry is None or entry.count == 0 or entry.nbytes > MAX_ICC_BYTES:
        return None
    return entry


class TiffDriver:
    """``FormatDriver`` for TIFF and BigTIFF slides."""

    name = "tiff"
    label = "TIFF/BigTIFF"
    extensions: tuple[str, ...] = SLIDE_EXTENSIONS
    recognises: tuple[str, ...] = (".ndpi",)  # opened to answer "NDPI is not supported"

    def sniff(self, head: bytes) -> bool:
        return head[:4] in _MAGIC

    def parse(self, source: Spans) -> TiffStructure:
        return parse(source)

    def info(self, structure: TiffStructure) -> SlideInfo:
        return structure.info

    def open(self, reader: RangeReader, structure: TiffStructure) -> TiffSlide:
        return TiffSlide(reader, structure)

    def encode(self, structure: TiffStructure) -> dict[str, Any]:
        return encode_structure(structure)

    def decode(self, doc: dict[str, Any]) -> TiffStructure:
        return decode_structure(Doc(doc, "structure"))


DRIVER = TiffDriver()
