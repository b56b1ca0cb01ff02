"""The TIFF driver's structure as checked JSON data for the shared cache: every field's type
and the grid invariants are checked before the dataclasses are built (``records.Doc``)."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from ...records import CacheEntryError, Doc
from .header import TiffFormat
from .ifd import IfdEntry
from .levels import TiffLevel
from .strips import StripImage
from .structure import TiffStructure
from .tags import FIELD_TYPES


def encode_structure(structure: TiffStructure) -> dict[str, Any]:
    """The structure as JSON-ready data (``format.drivers`` adds the schema and version)."""
    return {"format_name": structure.format_name, "vendor": structure.vendor,
           "tiff": {"byteorder": structure.tiff.byteorder, "bigtiff": structure.tiff.bigtiff},
           "levels": [_level_doc(level) for level in structure.levels],
           "properties": [[key, value] for key, value in structure.properties],
           "mpp_x": structure.mpp_x, "mpp_y": structure.mpp_y,
           "magnification": structure.magnification,
           "associated": [_strip_doc(image) for image in structure.associated],
           "icc_profile": (_entry_doc(structure.icc_profile)
                           if structure.icc_profile is not None else None)}


def decode_structure(doc: Doc) -> TiffStructure:
    """The structure ``encode_structure`` wrote; ``CacheEntryError`` for anything else."""
    doc.keys({"format_name", "vendor", "tiff", "levels", "properties",
              "mpp_x", "mpp_y", "magnification", "associated", "icc_profile"})
    tiff = doc.doc("tiff")
    tiff.keys({"byteorder", "bigtiff"})
    byteorder = tiff.text("byteorder")
    if byteorder not in ("<", ">"):
        raise CacheEntryError(f"structure: byte order {byteorder!r}")
    levels = tuple(_level(Doc(item, f"level {i}")) for i, item in enumerate(doc.items("levels")))
    if not levels or any(level.level != i for i, level in enumerate(levels)):
        raise CacheEntryError("structure: levels missing or out of order")
    properties = doc.text_pairs("properties")
    associated = tuple(_strip(Doc(item, f"associated image {i}"))
                       for i, item in enumerate(doc.items("associated")))
    icc = doc.raw("icc_profile")
    return TiffStructure(doc.text("format_name"), doc.text("vendor"),
                         TiffFormat(byteorder, tiff.flag("bigtiff")), levels,
                         properties, doc.number_or_none("mpp_x"),
                         doc.number_or_none("mpp_y"), doc.number_or_none("magnification"),
                         associated, _entry(Doc(icc, "icc_profile")) if icc is not None else None)


_LEVEL_INTS = ("level", "ifd_index", "width", "height", "tile_width", "tile_height", "tiles_x",
               "tiles_y", "compression", "photometric")


def _level_doc(level: TiffLevel) -> dict[str, Any]:
    doc: dict[str, Any] = {name: getattr(level, name) for name in _LEVEL_INTS}
    doc["downsample"] = level.downsample
    doc["jpeg_tables"] = _entry_doc(level.jpeg_tables) if level.jpeg_tables else None
    doc["tile_offsets"] = _entry_doc(level.tile_offsets)
    doc["tile_byte_counts"] = _entry_doc(level.tile_byte_counts)
    return doc


def _level(doc: Doc) -> TiffLevel:
    doc.keys({*_LEVEL_INTS, "downsample", "jpeg_tables", "tile_offsets", "tile_byte_counts"})
    n = doc.integer
    tables = doc.raw("jpeg_tables")
    level = TiffLevel(level=n("level"), ifd_index=n("ifd_index"), width=n("width"),
                      height=n("height"), tile_width=n("tile_width"),
                      tile_height=n("tile_height"), tiles_x=n("tiles_x"), tiles_y=n("tiles_y"),
                      downsample=doc.number("downsample"), compression=n("compression"),
                      photometric=n("photometric"),
                      jpeg_tables=_entry(Doc(tables, doc.where)) if tables is not None else None,
                      tile_offsets=_entry(doc.doc("tile_offsets")),
                      tile_byte_counts=_entry(doc.doc("tile_byte_counts")))
    if not (level.width > 0 and level.height > 0 and level.tile_width > 0
            and level.tile_height > 0 and level.tiles_x == -(-level.width // level.tile_width)
            and level.tiles_y == -(-level.height // level.tile_height)
            and level.tile_offsets.count == level.tile_count
            and level.tile_byte_counts.count == level.tile_count
            and math.isfinite(level.downsample) and level.downsample > 0):
        raise CacheEntryError(f"structure: {doc.where} has an inconsistent grid")
    return level


_STRIP_INTS = ("ifd_index", "width", "height", "compression", "photometric", "samples",
               "rows_per_strip", "predictor")


def _strip_doc(image: StripImage) -> dict[str, Any]:
    doc: dict[str, Any] = {name: getattr(image, name) for name in _STRIP_INTS}
    doc.update(name=image.name, bits=list(image.bits), subsampling=list(image.subsampling),
               strip_offsets=_entry_doc(image.strip_offsets),
               strip_byte_counts=_entry_doc(image.strip_byte_counts),
               jpeg_tables=_entry_doc(image.jpeg_tables) if image.jpeg_tables else None)
    return doc


def _strip(doc: Doc) -> StripImage:
    doc.keys({*_STRIP_INTS, "name", "bits", "subsampling", "strip_offsets",
              "strip_byte_counts", "jpeg_tables"})
    small = [doc.items("bits"), doc.items("subsampling")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 64
               for values in small for v in values):
        raise CacheEntryError(f"structure: {doc.where}: bits or subsampling")
    tables = doc.raw("jpeg_tables")
    n = doc.integer
    image = StripImage(doc.text("name"), n("ifd_index"), n("width"), n("height"),
                       n("compression"), n("photometric"), n("samples"), n("rows_per_strip"),
                       n("predictor"), tuple(small[0]), tuple(small[1]),
                       _entry(doc.doc("strip_offsets")), _entry(doc.doc("strip_byte_counts")),
                       _entry(Doc(tables, doc.where)) if tables is not None else None)
    if not (image.width > 0 and image.height > 0 and image.rows_per_strip > 0):
        raise CacheEntryError(f"structure: {doc.where} has an empty size")
    return image


def _entry_doc(entry: IfdEntry) -> dict[str, Any]:
    inline = base64.b64encode(entry.inline).decode() if entry.inline is not None else None
    return {"tag": entry.tag, "type": entry.type, "count": entry.count, "inline": inline,
            "offset": entry.offset}


def _entry(doc: Doc) -> IfdEntry:
    doc.keys({"tag", "type", "count", "inline", "offset"})
    inline = doc.raw("inline")
    if inline is not None and not isinstance(inline, str):
        raise CacheEntryError(f"structure: {doc.where}: inline is not base64 text")
    try:
        raw = base64.b64decode(inline, validate=True) if inline is not None else None
    except (binascii.Error, ValueError) as exc:
        raise CacheEntryError(f"structure: {doc.where}: {exc}") from None
    offset = doc.raw("offset")
    if not (isinstance(offset, int) and not isinstance(offset, bool) and offset >= -1):
        raise CacheEntryError(f"structure: {doc.where}: offset {offset!r}")
    entry = IfdEntry(doc.integer("tag"), doc.integer("type"), doc.integer("count"), raw, offset)
    if entry.type not in FIELD_TYPES:
        raise CacheEntryError(f"structure: {doc.where}: field type {entry.type}")
    return entry
