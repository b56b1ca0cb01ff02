"""A small pyramidal TIFF writer (JPEG tiles, YCbCr, classic TIFF or BigTIFF) for the demo
slide and for tests; TIFF 6.0 layout: header, tile data level by level, then each IFD."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
from PIL import Image

from .tags import Tag

_TYPES = {"H": 3, "I": 4, "Q": 16, "s": 2, "B": 7, "R": 5}  # "R": RATIONAL, (num, den) pairs


def _jpeg(tile: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    tile.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def pyramid(image: Image.Image, min_side: int = 512) -> Iterator[Image.Image]:
    """The image, then halvings while the longest side stays at least ``min_side``."""
    yield image
    while max(image.size) // 2 >= min_side:
        image = image.reduce(2)
        yield image


def write_pyramid(image: Image.Image, tile: int = 256, quality: int = 85,
                  description: str = "", bigtiff: bool = False, min_side: int = 512,
                  mpp: float | None = None) -> bytes:
    """Encode ``image`` as a tiled JPEG pyramid (one IFD per level, chained largest first).
    With ``mpp`` (microns per level-0 pixel) every level gets X/YResolution in pixels per
    centimetre (ResolutionUnit 3, TIFF 6.0) for its own scale, ``mpp * 2**level``."""
    out = io.BytesIO()
    off_code = "Q" if bigtiff else "I"
    out.write(b"II" + (struct.pack("<HHHQ", 43, 8, 0, 0) if bigtiff else struct.pack("<HI", 42, 0)))
    first_ifd_pos = 8 if bigtiff else 4
    link_pos = first_ifd_pos
    for index, level in enumerate(pyramid(image.convert("RGB"), min_side)):
        width, height = level.size
        across, down = -(-width // tile), -(-height // tile)
        offsets, counts = [], []
        for ty in range(down):
            for tx in range(across):
                box = level.crop((tx * tile, ty * tile, (tx + 1) * tile, (ty + 1) * tile))
                data = _jpeg(box, quality)
                offsets.append(out.tell())
                counts.append(len(data))
                out.write(data)
                if out.tell() % 2:
                    out.write(b"\0")
        entries = level_entries(index, width, height, tile, offsets, counts, off_code=off_code,
                                mpp=mpp, description=description)
        ifd_pos = write_ifd(out, sorted(entries), bigtiff)
        here = out.tell()
        out.seek(link_pos)
        out.write(struct.pack("<" + off_code, ifd_pos))
        out.seek(here)
        link_pos = ifd_pos + (8 if bigtiff else 2) + len(entries) * (20 if bigtiff else 12)
    return out.getvalue()


def level_entries(index: int, width: int, height: int, tile: int, offsets: list[int],
                  counts: list[int], *, off_code: str = "I", mpp: float | None = None,
                  description: str = "") -> list[tuple[int, str, list[int] | bytes]]:
    """The IFD entries of pyramid level ``index`` (a reduced image past 0) of JPEG YCbCr
    ``tile`` px tiles at ``offsets``/``counts``: with ``mpp`` its X/YResolution in pixels per
    centimetre for its own scale (``mpp * 2**index``), with ``description`` (level 0) the
    ImageDescription."""
    entries: list[tuple[int, str, list[int] | bytes]] = [
        (Tag.NEW_SUBFILE_TYPE, "I", [1 if index else 0]),
        (Tag.IMAGE_WIDTH, "I", [width]), (Tag.IMAGE_LENGTH, "I", [height]),
        (Tag.BITS_PER_SAMPLE, "H", [8, 8, 8]), (Tag.COMPRESSION, "H", [7]),
        (Tag.PHOTOMETRIC, "H", [6]), (Tag.SAMPLES_PER_PIXEL, "H", [3]),
        (Tag.PLANAR_CONFIGURATION, "H", [1]),
        (Tag.TILE_WIDTH, "H", [tile]), (Tag.TILE_LENGTH, "H", [tile]),
        (Tag.TILE_OFFSETS, off_code, offsets), (Tag.TILE_BYTE_COUNTS, "I", counts),
    ]
    if mpp is not None:
        ratio = _rational(10000.0 / (mpp * 2**index))
        entries += [(Tag.X_RESOLUTION, "R", ratio), (Tag.Y_RESOLUTION, "R", ratio),
                    (Tag.RESOLUTION_UNIT, "H", [3])]
    if description and index == 0:
        entries.append((Tag.IMAGE_DESCRIPTION, "s", description.encode() + b"\0"))
    return entries


def _rational(value: float) -> list[int]:
    fraction = Fraction(value).limit_denominator(10000)
    return [fraction.numerator, fraction.denominator]


def write_ifd(out: io.BytesIO, entries: list[tuple[int, str, list[int] | bytes]],
               bigtiff: bool) -> int:
    slot = 8 if bigtiff else 4
    off_code = "Q" if bigtiff else "I"
    blobs: list[bytes] = []
    for _, code, values in entries:
        blobs.append(values if isinstance(values, bytes)
                     else struct.pack(f"<{len(values)}{'I' if code == 'R' else code}", *values))
    # Out-of-line values go first, then the IFD (word-aligned).
    positions: list[int | None] = []
    for blob in blobs:
        if len(blob) > slot:
            if out.tell() % 2:
                out.write(b"\0")
            positions.append(out.tell())
            out.write(blob)
        else:
            positions.append(None)
    if out.tell() % 2:
        out.write(b"\0")
    ifd_pos = out.tell()
    out.write(struct.pack("<Q" if bigtiff else "<H", len(entries)))
    for (tag, code, values), blob, pos in zip(entries, blobs, positions, strict=True):
        count = (len(blob) if isinstance(values, bytes)
                 else len(values) // 2 if code == "R" else len(values))
        head = struct.pack("<HH", tag, _TYPES[code]) + struct.pack("<" + off_code, count)
        value = blob.ljust(slot, b"\0") if pos is None else struct.pack("<" + off_code, pos)
        out.write(head + value)
    out.write(b"\0" * slot)  # next IFD: patched by the caller
    return ifd_pos


def synthetic_tissue(width: int, height: int, seed: int = 7) -> Image.Image:
    """An H&E-like picture: pale background, pink tissue regions, purple nuclei, grain.
    Painted at 1/4 scale and enlarged, so a demo-sized slide takes about a second."""
    rng = np.random.default_rng(seed)
    w, h = max(16, width // 4), max(16, height // 4)
    field = rng.random((max(4, h // 16), max(4, w // 16))).astype(np.float32)
    mask = np.asarray(Image.fromarray((field * 255).astype(np.uint8)).resize(
        (w, h), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    tissue = np.clip((mask - 0.45) * 6, 0, 1)[..., None]
    background = np.array([242, 240, 244], np.float32)
    pink = np.array([226, 150, 190], np.float32)
    canvas = background * (1 - tissue) + pink * tissue
    dots = (rng.random((h, w)) > 0.985).astype(np.float32)[..., None]
    purple = np.array([110, 60, 150], np.float32)
    canvas = canvas * (1 - dots * tissue) + purple * dots * tissue
    small = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    image = small.resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((width, height), 6).convert("RGB")
    return Image.blend(image, grain, 0.04)
