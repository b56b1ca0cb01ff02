"""What the host cache stores besides slide structures (those are the format drivers'
JSON, ``format.drivers.encode``): numeric arrays (tile tables, tissue masks) as an array record:
``b"WSIA"``, a little-endian uint32 header length, a JSON header ``{"schema": kind, "version": 1,
"meta": {...}, "arrays": [{"name", "dtype", "shape", "offset", "nbytes"}]}`` and the raw
little-endian array bytes back to back. Dtypes come from an allow-list (``DTYPES``); ``object``
never.

Anything else (another schema, another version, wrong types, truncated bytes) raises
``CacheEntryError``: the caller treats it as a miss."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..records import CacheEntryError, Doc, check_schema, load_json, refuse_pickle

ARRAYS_MAGIC = b"WSIA"
ARRAYS_VERSION = 1
DTYPES = frozenset({"|u1", "|b1", "<u2", "<u4", "<u8", "<i4", "<i8", "<f4", "<f8"})
MAX_HEADER_BYTES = 1 << 20
MAX_NDIM = 4
_LEN = struct.Struct("<I")

__all__ = ["CacheEntryError", "DTYPES", "decode_arrays", "encode_arrays"]


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
    refuse_pickle(blob)
    start = len(ARRAYS_MAGIC) + _LEN.size
    if len(blob) < start or not blob.startswith(ARRAYS_MAGIC):
        raise CacheEntryError(f"{kind}: not an array record")
    (size,) = _LEN.unpack_from(blob, len(ARRAYS_MAGIC))
    if size > min(MAX_HEADER_BYTES, len(blob) - start):
        raise CacheEntryError(f"{kind}: header of {size} bytes in a {len(blob)}-byte record")
    doc = Doc(load_json(blob[start:start + size]), kind)
    check_schema(doc, kind, ARRAYS_VERSION)
    doc.keys({"schema", "version", "meta", "arrays"})
    meta = doc.raw("meta")
    if not isinstance(meta, dict):
        raise CacheEntryError(f"{kind}: meta is not an object")
    payload = start + size
    arrays: dict[str, np.ndarray] = {}
    expected = 0
    for item in doc.items("arrays"):
        spec = Doc(item, kind)
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
