"""Associated images (label, macro, thumbnail): stripped IFDs decoded whole.

Their strips use whatever the scanner chose (Aperio: JPEG with JPEGTables for the thumbnail
and macro, LZW with a horizontal predictor for the label). Rather than decoding each codec
here, the strips are read (exact ranges, one round trip) and put back into a minimal
little-endian TIFF of that one image, which Pillow decodes with libtiff, the codec library
made for it. Sizes are checked against ``limits`` before anything is read."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ...errors import DecodeError, InvalidTiff, LimitExceeded, UnsupportedFormat
from ...io.range_reader import RangeReader, read_ranges
from ...limits import MAX_ASSOCIATED_BYTES, MAX_ASSOCIATED_PIXELS, MAX_EAGER_VALUE
from ..jpeg_scans import check_scans
from .header import TiffFormat
from .ifd import Ifd, IfdEntry, check_value_size, decode_array, read_fields
from .tags import JPEG, Tag
from .writer import write_ifd

WHITE = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class StripImage:
    """One associated image of the file: its name and what rebuilding it needs."""

    name: str
    ifd_index: int
    width: int
    height: int
    compression: int
    photometric: int
    samples: int
    rows_per_strip: int
    predictor: int
    bits: tuple[int, ...]
    subsampling: tuple[int, ...]
    strip_offsets: IfdEntry
    strip_byte_counts: IfdEntry
    jpeg_tables: IfdEntry | None


def strip_image(name: str, index: int, ifd: Ifd) -> StripImage | None:
    """The associated image stored in ``ifd``; None unless it is stripped (a tiled label or
    macro is not served)."""
    offsets, counts = ifd.entry(Tag.STRIP_OFFSETS), ifd.entry(Tag.STRIP_BYTE_COUNTS)
    width = ifd.int_value(Tag.IMAGE_WIDTH, 0) or 0
    height = ifd.int_value(Tag.IMAGE_LENGTH, 0) or 0
    if offsets is None or counts is None or not (0 < width and 0 < height):
        return None
    bits = ifd.value(Tag.BITS_PER_SAMPLE)
    sub = ifd.value(Tag.YCBCR_SUBSAMPLING)
    tables = ifd.entry(Tag.JPEG_TABLES)
    return StripImage(
        name=name, ifd_index=index, width=width, height=height,
        compression=ifd.int_value(Tag.COMPRESSION, 1) or 1,
        photometric=ifd.int_value(Tag.PHOTOMETRIC, 2) or 0,
        samples=ifd.int_value(Tag.SAMPLES_PER_PIXEL, 1) or 1,
        rows_per_strip=min(height, ifd.int_value(Tag.ROWS_PER_STRIP, height) or height),
        predictor=ifd.int_value(Tag.PREDICTOR, 1) or 1,
        bits=tuple(int(b) for b in bits) if isinstance(bits, tuple) else (8,),
        subsampling=tuple(int(s) for s in sub) if isinstance(sub, tuple) else (),
        strip_offsets=offsets, strip_byte_counts=counts,
        jpeg_tables=tables if tables is not None and tables.count > 0 else None)


def read_strip_image(reader: RangeReader, fmt: TiffFormat, image: StripImage) -> Image.Image:
    """The image as RGB. ``LimitExceeded`` when it (or a JPEG strip's scans, see
    ``jpeg_scans``) is larger than the limits allow,
    ``InvalidTiff`` for strips outside the file, ``UnsupportedFormat``/``DecodeError`` when
    its codec cannot decode it."""
    if image.width * image.height > MAX_ASSOCIATED_PIXELS:
        raise LimitExceeded("MAX_ASSOCIATED_PIXELS", f"the {image.name} image is "
                            f"{image.width}x{image.height}, more than {MAX_ASSOCIATED_PIXELS} px")
    strips = -(-image.height // image.rows_per_strip)
    if image.strip_offsets.count != strips or image.strip_byte_counts.count != strips:
        raise InvalidTiff(f"the {image.name} image has {image.strip_offsets.count} strips "
                          f"for {strips} rows of {image.rows_per_strip}")
    entries = [image.strip_offsets, image.strip_byte_counts]
    if image.jpeg_tables is not None:
        check_value_size(image.jpeg_tables, f"the {image.name} image", MAX_EAGER_VALUE)
        entries.append(image.jpeg_tables)
    raw = read_fields(reader, entries)
    offsets = decode_array(fmt, image.strip_offsets, raw[0])
    counts = decode_array(fmt, image.strip_byte_counts, raw[1])
    total = int(counts.sum())
    if total > MAX_ASSOCIATED_BYTES:
        raise LimitExceeded("MAX_ASSOCIATED_BYTES", f"the {image.name} image has {total} "
                            f"bytes of strips, more than {MAX_ASSOCIATED_BYTES}")
    if np.any(offsets + counts > reader.size):
        raise InvalidTiff(f"a strip of the {image.name} image lies past the end of the file")
    data = read_ranges(reader, [(int(o), int(n)) for o, n in zip(offsets, counts, strict=True)])
    if image.compression == JPEG:
        for strip in data:  # scan bombs are refused before libtiff decodes them
            check_scans(strip)
    tiff = _single_image_tiff(image, data, raw[2] if image.jpeg_tables is not None else None)
    try:
        with Image.open(io.BytesIO(tiff)) as decoded:
            decoded.load()
            return _rgb(decoded)
    except (OSError, ValueError, SyntaxError) as exc:
        if "compression" in str(exc).lower() or "decoder" in str(exc).lower():
            raise UnsupportedFormat(f"the {image.name} image's compression "
                                    f"({image.compression}) cannot be decoded: {exc}") from None
        raise DecodeError(f"the {image.name} image could not be decoded: {exc}") from None


def _single_image_tiff(image: StripImage, strips: list[bytes], tables: bytes | None) -> bytes:
    out = io.BytesIO()
    out.write(b"II*\0" + struct.pack("<I", 0))
    offsets = []
    for strip in strips:
        offsets.append(out.tell())
        out.write(strip)
    entries: list[tuple[int, str, list[int] | bytes]] = [
        (Tag.IMAGE_WIDTH, "I", [image.width]), (Tag.IMAGE_LENGTH, "I", [image.height]),
        (Tag.BITS_PER_SAMPLE, "H", list(image.bits)),
        (Tag.COMPRESSION, "H", [image.compression]),
        (Tag.PHOTOMETRIC, "H", [image.photometric]),
        (Tag.STRIP_OFFSETS, "I", offsets),
        (Tag.SAMPLES_PER_PIXEL, "H", [image.samples]),
        (Tag.ROWS_PER_STRIP, "I", [image.rows_per_strip]),
        (Tag.STRIP_BYTE_COUNTS, "I", [len(s) for s in strips]),
        (Tag.PLANAR_CONFIGURATION, "H", [1]),
    ]
    if image.predictor != 1:
        entries.append((Tag.PREDICTOR, "H", [image.predictor]))
    if tables is not None:
        entries.append((Tag.JPEG_TABLES, "B", tables))
    if image.subsampling:
        entries.append((Tag.YCBCR_SUBSAMPLING, "H", list(image.subsampling)))
    position = write_ifd(out, sorted(entries), bigtiff=False)
    out.seek(4)
    out.write(struct.pack("<I", position))
    return out.getvalue()


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")
