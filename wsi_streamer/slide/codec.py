"""What the host cache stores, in versioned encodings that are data, never code: no pickle.

- A ``SlideStructure`` is UTF-8 JSON ``{"schema": "wsi_streamer.structure", "version": 1, ...}``;
  decoding checks every field's type and the grid invariants before building the dataclasses.
- Numeric arrays (tile tables, tissue masks) are an array record: ``b"WSIA"``, a little-endian
  uint32 header length, a JSON header ``{"schema": kind, "version": 1, "meta": {...},
  "arrays": [{"name", "dtype", "shape", "offset", "nbytes"}]}`` and the raw little-endian array
  bytes back to back. Dtypes come from an allow-list (``DTYPES``); ``object`` never.

Anything else (another schema, another version, wrong types, truncated bytes) raises
``CacheEntryError``: the caller treats it as a miss."""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..format.detect import SlideStructure
from ..format.levels import LevelInfo
from ..format.tiff.header import TiffFormat
from ..format.tiff.ifd import IfdEntry
from ..format.tiff.tags import FIELD_TYPES

STRUCTURE_SCHEMA = "wsi_streamer.structure"
STRUCTURE_VERSION = 1
ARRAYS_MAGIC = b"WSIA"
ARRAYS_VERSION = 1
DTYPES = frozenset({"|u1", "|b1", "<u2", "<u4", "<u8", "<i4", "<i8", "<f4", "<f8"})
MAX_HEADER_BYTES = 1 << 20
MAX_NDIM = 4
_LEN = struct.Struct("<I")


class CacheEntryError(ValueError):
    """A cache entry this version does not read; ``stale`` when only its version differs."""

    def __init__(self, message: str, *, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale


# --- slide structures -------------------------------------------------------------------------
def encode_structure(structure: SlideStructure) -> bytes:
    doc = {"schema": STRUCTURE_SCHEMA, "version": STRUCTURE_VERSION,
           "format_name": structure.format_name, "vendor": structure.vendor,
           "tiff": {"byteorder": structure.tiff.byteorder, "bigtiff": structure.tiff.bigtiff},
           "levels": [_level_doc(level) for level in structure.levels],
           "properties": [[key, value] for key, value in structure.properties],
           "mpp_x": structure.mpp_x, "mpp_y": structure.mpp_y,
           "magnification": structure.magnification}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_structure(blob: bytes) -> SlideStructure:
    """The structure ``encode_structure`` wrote; ``CacheEntryError`` for anything else."""
    doc = _Doc(_load_json(blob), "structure")
    _check_schema(doc, STRUCTURE_SCHEMA, STRUCTURE_VERSION)
    doc.keys({"schema", "version", "format_name", "vendor", "tiff", "levels", "properties",
              "mpp_x", "mpp_y", "magnification"})
    tiff = doc.doc("tiff")
    tiff.keys({"byteorder", "bigtiff"})
    byteorder = tiff.text("byteorder")
    if byteorder not in ("<", ">"):
        raise CacheEntryError(f"structure: byte order {byteorder!r}")
    levels = tuple(_level(_Doc(item, f"level {i}")) for i, item in enumerate(doc.items("levels")))
    if not levels or any(level.level != i for i, level in enumerate(levels)):
        raise CacheEntryError("structure: levels missing or out of order")
    properties = []
    for pair in doc.items("properties"):
        if not (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(p, str) for p in pair)):
            raise CacheEntryError("structure: a property is not a [name, value] pair")
        properties.append((pair[0], pair[1]))
    return SlideStructure(doc.text("format_name"), doc.text("vendor"),
                          TiffFormat(byteorder, tiff.flag("bigtiff")), levels,
                          tuple(properties), doc.number_or_none("mpp_x"),
                          doc.number_or_none("mpp_y"), doc.number_or_none("magnification"))


_LEVEL_INTS = ("level", "ifd_index", "width", "height", "tile_width", "tile_height", "tiles_x",
               "tiles_y", "compression", "photometric")


def _level_doc(level: LevelInfo) -> dict[str, Any]:
    doc: dict[str, Any] = {name: getattr(level, name) for name in _LEVEL_INTS}
    doc["downsample"] = level.downsample
    doc["jpeg_tables"] = _entry_doc(level.jpeg_tables) if level.jpeg_tables else None
    doc["tile_offsets"] = _entry_doc(level.tile_offsets)
    doc["tile_byte_counts"] = _entry_doc(level.tile_byte_counts)
    return doc


def _level(doc: _Doc) -> LevelInfo:
    doc.keys({*_LEVEL_INTS, "downsample", "jpeg_tables", "tile_offsets", "tile_byte_counts"})
    n = doc.integer
    tables = doc.raw("jpeg_tables")
    level = LevelInfo(n("level"), n("ifd_index"), n("width"), n("height"), n("tile_width"),
                      n("tile_height"), n("tiles_x"), n("tiles_y"),
                      downsample=doc.number("downsample"), compression=n("compression"),
                      photometric=n("photometric"),
                      jpeg_tables=_entry(_Doc(tables, doc.where)) if tables is not None else None,
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


def _entry_doc(entry: IfdEntry) -> dict[str, Any]:
    inline = base64.b64encode(entry.inline).decode() if entry.inline is not None else None
    return {"tag": entry.tag, "type": entry.type, "count": entry.count, "inline": inline,
            "offset": entry.offset}


def _entry(doc: _Doc) -> IfdEntry:
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


# --- array records ----------------------------------------------------------------------------
def encode_arrays(kind: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """An array record; ``TypeError`` for a dtype outside ``DTYPES`` (a bug in the caller)."""
    specs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    offset = 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array)
        data = data.astype(data.dtype.newbyteorder("<"), copy=False)
        if data.dtype.str not in DTYPES or data.ndim > MAX_NDIM:
            raise TypeError(f"array {name!r}: {data.dtype.str} x {data.ndim}-D is not storable")
        raw = data.tobytes()
        specs.append({"name": name, "dtype": data.dtype.str, "shape": list(data.shape),
                      "offset": offset, "nbytes": len(raw)})
        chunks.append(raw)
        offset += len(raw)
    header = json.dumps({"schema": kind, "version": ARRAYS_VERSION, "meta": dict(meta),
                         "arrays": specs}, separators=(",", ":")).encode()
    return b"".join([ARRAYS_MAGIC, _LEN.pack(len(header)), header, *chunks])


def decode_arrays(blob: bytes, kind: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a record of this ``kind``; arrays are read-only views of ``blob``.
    ``CacheEntryError`` for anything else."""
    _refuse_pickle(blob)
    start = len(ARRAYS_MAGIC) + _LEN.size
    if len(blob) < start or not blob.startswith(ARRAYS_MAGIC):
        raise CacheEntryError(f"{kind}: not an array record")
    (size,) = _LEN.unpack_from(blob, len(ARRAYS_MAGIC))
    if size > min(MAX_HEADER_BYTES, len(blob) - start):
        raise CacheEntryError(f"{kind}: header of {size} bytes in a {len(blob)}-byte record")
    doc = _Doc(_load_json(blob[start:start + size]), kind)
    _check_schema(doc, kind, ARRAYS_VERSION)
    doc.keys({"schema", "version", "meta", "arrays"})
    meta = doc.raw("meta")
    if not isinstance(meta, dict):
        raise CacheEntryError(f"{kind}: meta is not an object")
    payload = start + size
    arrays: dict[str, np.ndarray] = {}
    expected = 0
    for item in doc.items("arrays"):
        spec = _Doc(item, kind)
        spec.keys({"name", "dtype", "shape", "offset", "nbytes"})
        name, dtype_text = spec.text("name"), spec.text("dtype")
        shape = spec.items("shape")
        if dtype_text not in DTYPES or name in arrays or len(shape) > MAX_NDIM or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise CacheEntryError(f"{kind}: array {name!r} is {dtype_text} {shape}")
        dtype = np.dtype(dtype_text)
        offset, nbytes = spec.integer("offset"), spec.integer("nbytes")
        if offset != expected or nbytes != math.prod(shape) * dtype.itemsize:
            raise CacheEntryError(f"{kind}: array {name!r} layout")
        expected += nbytes
        if payload + expected > len(blob):
            raise CacheEntryError(f"{kind}: truncated at array {name!r}")
        count = math.prod(shape)
        array = (np.frombuffer(blob, dtype=dtype, count=count, offset=payload + offset)
                 if count else np.empty(0, dtype=dtype))
        arrays[name] = array.reshape(shape)
    if payload + expected != len(blob):
        raise CacheEntryError(f"{kind}: {len(blob) - payload - expected} trailing bytes")
    return meta, arrays


# --- helpers ----------------------------------------------------------------------------------
def _load_json(blob: bytes) -> Any:
    _refuse_pickle(blob)
    try:
        return json.loads(blob)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CacheEntryError(f"not JSON: {exc}") from None


def _refuse_pickle(blob: bytes) -> None:
    if blob[:1] == b"\x80":  # PROTO opcode: what versions before the JSON encodings wrote
        raise CacheEntryError("a pickle written by an older version (not loaded)", stale=True)


def _check_schema(doc: _Doc, schema: str, version: int) -> None:
    if doc.raw("schema") != schema:
        raise CacheEntryError(f"schema {doc.raw('schema')!r}, not {schema!r}")
    if doc.raw("version") != version:
        raise CacheEntryError(f"{schema} version {doc.raw('version')!r}, this build reads "
                              f"{version}", stale=True)


class _Doc:
    """Typed access to one decoded JSON object; wrong types raise ``CacheEntryError``."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise CacheEntryError(f"{where}: not a JSON object")
        self.value: dict[str, Any] = value
        self.where = where

    def keys(self, names: set[str]) -> None:
        if set(self.value) != names:
            raise CacheEntryError(f"{self.where}: fields {sorted(set(self.value) ^ names)}")

    def raw(self, name: str) -> Any:
        return self.value.get(name)

    def _typed(self, name: str, kind: type | tuple[type, ...]) -> Any:
        value = self.value.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise CacheEntryError(f"{self.where}: {name} is {type(value).__name__}")
        return value

    def integer(self, name: str) -> int:
        value: int = self._typed(name, int)
        if value < 0:
            raise CacheEntryError(f"{self.where}: {name} is negative")
        return value

    def number(self, name: str) -> float:
        return float(self._typed(name, (int, float)))

    def number_or_none(self, name: str) -> float | None:
        return None if self.value.get(name) is None else self.number(name)

    def text(self, name: str) -> str:
        value: str = self._typed(name, str)
        return value

    def flag(self, name: str) -> bool:
        value: bool = self._typed(name, bool)
        return value

    def items(self, name: str) -> list[Any]:
        value: list[Any] = self._typed(name, list)
        return value

    def doc(self, name: str) -> _Doc:
        return _Doc(self.value.get(name), f"{self.where}.{name}")
