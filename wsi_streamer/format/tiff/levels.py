"""Pyramid identification: which IFDs are levels of the full-resolution image.

Kept: tiled IFDs whose size is the base image divided by a consistent factor, not marked as a
thumbnail/label/macro (vendor rules decide that: ``svs.py``, ``generic.py``), largest first.
Validated here: tiling, sample layout and compression, with the reason named on refusal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from ...errors import InvalidTiff, LimitExceeded, UnsupportedFormat
from ...limits import (
    MAX_DIMENSION,
    MAX_TILE_SIDE,
    MAX_TILES_PER_LEVEL,
    MIN_TILE_SIDE,
    TILE_SIDE_MULTIPLE,
)
from ..info import LevelGeometry
from .ifd import Ifd, IfdEntry
from .tags import (
    PHOTOMETRIC_RGB,
    PHOTOMETRIC_YCBCR,
    SUPPORTED_COMPRESSIONS,
    Tag,
    compression_name,
)


@dataclass(frozen=True, slots=True)
class TiffLevel(LevelGeometry):
    """One pyramid level in the TIFF: its geometry plus where its tiles are described."""

    ifd_index: int
    compression: int
    photometric: int
    jpeg_tables: IfdEntry | None  # read with the tile arrays, on the level's first tile
    tile_offsets: IfdEntry
    tile_byte_counts: IfdEntry

    @property
    def geometry(self) -> LevelGeometry:
        """The neutral part alone (what ``SlideInfo`` holds)."""
        return LevelGeometry(*(getattr(self, f.name) for f in fields(LevelGeometry)))


def is_tiled(ifd: Ifd) -> bool:
    return ifd.value(Tag.TILE_WIDTH) is not None and ifd.entry(Tag.TILE_OFFSETS) is not None


def dimensions(ifd: Ifd) -> tuple[int, int]:
    return ifd.int_value(Tag.IMAGE_WIDTH, 0) or 0, ifd.int_value(Tag.IMAGE_LENGTH, 0) or 0


def check_supported(ifd: Ifd, what: str) -> None:
    """Raise ``UnsupportedFormat`` naming why this IFD cannot be served as tiles."""
    if not is_tiled(ifd):
        raise UnsupportedFormat(f"{what} is stripped, not tiled (only tiled TIFFs are served)")
    compression = ifd.int_value(Tag.COMPRESSION, 1) or 1
    if compression not in SUPPORTED_COMPRESSIONS:
        raise UnsupportedFormat(f"{what} uses {compression_name(compression)} compression "
                                "(supported: JPEG, JPEG 2000)")
    if (ifd.int_value(Tag.PLANAR_CONFIGURATION, 1) or 1) != 1:
        raise UnsupportedFormat(f"{what} stores colour planes separately (PlanarConfiguration 2)")
    bits = ifd.value(Tag.BITS_PER_SAMPLE)
    if isinstance(bits, tuple) and any(b != 8 for b in bits):  # floats/NaN included
        raise UnsupportedFormat(f"{what} has {bits[0]}-bit samples (only 8-bit)")
    if (ifd.int_value(Tag.IMAGE_DEPTH, 1) or 1) != 1:
        raise UnsupportedFormat(f"{what} is a volume (ImageDepth > 1)")


def build_level(ifd: Ifd, ifd_index: int, level: int, base: tuple[int, int]) -> TiffLevel:
    width, height = dimensions(ifd)
    tw = ifd.int_value(Tag.TILE_WIDTH, 0) or 0
    th = ifd.int_value(Tag.TILE_LENGTH, 0) or 0
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise InvalidTiff(f"IFD {ifd_index}: absurd dimensions {width}x{height}")
    if not (0 < tw <= MAX_TILE_SIDE and 0 < th <= MAX_TILE_SIDE):
        raise InvalidTiff(f"IFD {ifd_index}: absurd tile size {tw}x{th}")
    check_tile_sides(ifd_index, tw, th)
    tiles_x, tiles_y = -(-width // tw), -(-height // th)
    if tiles_x * tiles_y > MAX_TILES_PER_LEVEL:
        raise LimitExceeded("MAX_TILES_PER_LEVEL", f"IFD {ifd_index}: {tiles_x}x{tiles_y} "
                            f"tiles, more than {MAX_TILES_PER_LEVEL} in one level")
    offsets, counts = ifd.entry(Tag.TILE_OFFSETS), ifd.entry(Tag.TILE_BYTE_COUNTS)
    if offsets is None or counts is None:
        raise InvalidTiff(f"IFD {ifd_index}: TileOffsets or TileByteCounts missing")
    if offsets.count != tiles_x * tiles_y or counts.count != offsets.count:
        raise InvalidTiff(f"IFD {ifd_index}: {offsets.count} tile offsets and {counts.count} "
                          f"byte counts for a {tiles_x}x{tiles_y} grid")
    tables = ifd.entry(Tag.JPEG_TABLES)
    compression = ifd.int_value(Tag.COMPRESSION, 1) or 1
    samples = ifd.int_value(Tag.SAMPLES_PER_PIXEL, 1) or 1
    default_photometric = PHOTOMETRIC_YCBCR if compression == 33003 else PHOTOMETRIC_RGB
    photometric = ifd.int_value(Tag.PHOTOMETRIC, default_photometric)
    if samples not in (1, 3, 4):
        raise UnsupportedFormat(f"IFD {ifd_index} has {samples} samples per pixel")
    return TiffLevel(
        level=level, ifd_index=ifd_index, width=width, height=height,
        tile_width=tw, tile_height=th, tiles_x=tiles_x, tiles_y=tiles_y,
        downsample=(base[0] / width + base[1] / height) / 2,
        compression=compression,
        photometric=photometric if photometric is not None else default_photometric,
        jpeg_tables=tables if tables is not None and tables.count > 0 else None,
        tile_offsets=offsets, tile_byte_counts=counts,
    )


def check_tile_sides(ifd_index: int, tw: int, th: int) -> None:
    """``LimitExceeded`` unless both tile sides are at least ``MIN_TILE_SIDE`` and multiples of
    ``TILE_SIDE_MULTIPLE`` (TIFF 6.0, section 15: "TileWidth must be a multiple of 16")."""
    if tw < MIN_TILE_SIDE or th < MIN_TILE_SIDE:
        raise LimitExceeded("MIN_TILE_SIDE", f"IFD {ifd_index}: {tw}x{th} px tiles are smaller "
                            f"than {MIN_TILE_SIDE} px (TIFF 6.0)")
    if tw % TILE_SIDE_MULTIPLE or th % TILE_SIDE_MULTIPLE:
        raise LimitExceeded("TILE_SIDE_MULTIPLE", f"IFD {ifd_index}: {tw}x{th} px tiles; TIFF "
                            f"6.0 requires tile sides that are multiples of {TILE_SIDE_MULTIPLE}")


def consistent_reduction(base: tuple[int, int], size: tuple[int, int]) -> bool:
    """True when ``size`` is ``base`` divided by one factor on both axes (to rounding)."""
    (bw, bh), (w, h) = base, size
    if w <= 0 or h <= 0 or w > bw or h > bh:
        return False
    ds = bw / w
    return abs(bh / ds - h) <= max(2.0, 0.01 * h) and abs(bw / (bh / h) - w) <= max(
        2.0, ds + 1.0)


def build_pyramid(ifds: tuple[Ifd, ...], excluded: Callable[[int, Ifd], bool]
                  ) -> tuple[TiffLevel, ...]:
    """Levels from the IFD chain: IFD 0 is the base; later IFDs join when tiled, not
    ``excluded`` (vendor rule: thumbnail, label, macro), strictly smaller and consistent."""
    base_ifd = ifds[0]
    check_supported(base_ifd, "the full-resolution image (IFD 0)")
    base = dimensions(base_ifd)
    chosen: list[tuple[int, Ifd]] = [(0, base_ifd)]
    for index, ifd in enumerate(ifds[1:], start=1):
        if not is_tiled(ifd) or excluded(index, ifd):
            continue
        if not consistent_reduction(base, dimensions(ifd)):
            continue
        chosen.append((index, ifd))
    chosen.sort(key=lambda item: (-dimensions(item[1])[0], item[0]))
    levels: list[TiffLevel] = []
    for index, ifd in chosen:
        if levels and dimensions(ifd)[0] >= levels[-1].width:
            continue  # same size as a level already kept (duplicate page)
        check_supported(ifd, f"pyramid level IFD {index}")
        levels.append(build_level(ifd, index, len(levels), base))
    return tuple(levels)
