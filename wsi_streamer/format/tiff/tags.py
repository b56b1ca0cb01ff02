"""TIFF 6.0 / BigTIFF tag numbers, field types and compression codes used by this package."""

from __future__ import annotations

from enum import IntEnum


class Tag(IntEnum):
    NEW_SUBFILE_TYPE = 254
    IMAGE_WIDTH = 256
    IMAGE_LENGTH = 257
    BITS_PER_SAMPLE = 258
    COMPRESSION = 259
    PHOTOMETRIC = 262
    IMAGE_DESCRIPTION = 270
    MAKE = 271
    MODEL = 272
    STRIP_OFFSETS = 273
    SAMPLES_PER_PIXEL = 277
    ROWS_PER_STRIP = 278
    STRIP_BYTE_COUNTS = 279
    X_RESOLUTION = 282
    Y_RESOLUTION = 283
    PLANAR_CONFIGURATION = 284
    PREDICTOR = 317
    RESOLUTION_UNIT = 296
    SOFTWARE = 305
    TILE_WIDTH = 322
    TILE_LENGTH = 323
    TILE_OFFSETS = 324
    TILE_BYTE_COUNTS = 325
    SUB_IFDS = 330
    JPEG_TABLES = 347
    YCBCR_SUBSAMPLING = 530
    ICC_PROFILE = 34675  # InterColorProfile
    IMAGE_DEPTH = 32997


# field type -> (size in bytes, struct code); the struct code is per component
# (RATIONAL and SRATIONAL are two of them). TIFF 6.0 section 2, BigTIFF adds 16-18.
FIELD_TYPES: dict[int, tuple[int, str]] = {
    1: (1, "B"),     # BYTE
    2: (1, "s"),     # ASCII
    3: (2, "H"),     # SHORT
    4: (4, "I"),     # LONG
    5: (8, "I"),     # RATIONAL (two LONGs)
    6: (1, "b"),     # SBYTE
    7: (1, "B"),     # UNDEFINED
    8: (2, "h"),     # SSHORT
    9: (4, "i"),     # SLONG
    10: (8, "i"),    # SRATIONAL
    11: (4, "f"),    # FLOAT
    12: (8, "d"),    # DOUBLE
    13: (4, "I"),    # IFD
    16: (8, "Q"),    # LONG8
    17: (8, "q"),    # SLONG8
    18: (8, "Q"),    # IFD8
}

JPEG = 7
JPEG_2000_CODES = {33003: "JPEG 2000 (Aperio YCbCr)", 33005: "JPEG 2000 (Aperio RGB)",
                   34712: "JPEG 2000"}
SUPPORTED_COMPRESSIONS = {JPEG, *JPEG_2000_CODES}

COMPRESSION_NAMES = {
    1: "uncompressed", 2: "CCITT RLE", 3: "CCITT Group 3", 4: "CCITT Group 4", 5: "LZW",
    6: "old-style JPEG", 7: "JPEG", 8: "Deflate", 32773: "PackBits", 32946: "Deflate",
    34887: "LERC", 34925: "LZMA", 50000: "Zstandard", 50001: "WebP", 50002: "JPEG XL",
    34892: "lossy JPEG (DNG)", **JPEG_2000_CODES,
}

PHOTOMETRIC_RGB = 2
PHOTOMETRIC_YCBCR = 6


def compression_name(code: int) -> str:
    return COMPRESSION_NAMES.get(code, f"compression {code}")
