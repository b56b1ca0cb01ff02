"""What the DICOM driver keeps of a parsed series: small, JSON-encodable (``codec``), keyed by
the series reader's identity in the shared cache. Private to the driver; others see ``info``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..info import LevelGeometry, SlideInfo

JPEG, JP2K, NATIVE = "jpeg", "jp2k", "native"


@dataclass(frozen=True, slots=True)
class DicomImage:
    """One instance's image as a grid of tiles. ``codec``: ``JPEG``, ``JP2K`` or ``NATIVE``;
    ``rgb``: JPEG frames coded as RGB (Photometric RGB: decoded without the YCbCr transform);
    ``ycbcr``: JPEG 2000 frames holding YCbCr without the codestream transform. ``tiles``:
    little-endian int64 ``[start, end)`` series offsets per tile, row-major, ``0, 0`` for a
    tile without a frame (TILED_SPARSE: background)."""

    name: str  # the member (object) it comes from
    width: int
    height: int
    tile_width: int
    tile_height: int
    codec: str
    rgb: bool
    ycbcr: bool
    tiles: bytes

    @property
    def tiles_x(self) -> int:
        return -(-self.width // self.tile_width)

    @property
    def tiles_y(self) -> int:
        return -(-self.height // self.tile_height)

    def tile_table(self) -> np.ndarray:
        """``(tiles_y * tiles_x, 2)`` int64 view of ``tiles``."""
        return np.frombuffer(self.tiles, "<i8").reshape(-1, 2)

    def geometry(self, level: int, base: DicomImage) -> LevelGeometry:
        downsample = (base.width / self.width + base.height / self.height) / 2
        return LevelGeometry(level, self.width, self.height, self.tile_width,
                             self.tile_height, self.tiles_x, self.tiles_y, downsample)


@dataclass(frozen=True, slots=True)
class DicomStructure:
    levels: tuple[DicomImage, ...]
    associated: tuple[tuple[str, DicomImage], ...]  # label, macro, thumbnail
    properties: tuple[tuple[str, str], ...]
    mpp_x: float | None
    mpp_y: float | None
    icc_profile: bytes | None
    focal_planes: tuple[float, ...]  # level 0's, Z in micrometres
    optical_paths: tuple[str, ...]
    selection: str  # the plane and path shown: z=<index>,path=<identifier>

    @property
    def info(self) -> SlideInfo:
        base = self.levels[0]
        return SlideInfo("DICOM", "dicom",
                         tuple(image.geometry(i, base) for i, image in enumerate(self.levels)),
                         self.properties, self.mpp_x, self.mpp_y, None,
                         tuple(name for name, _ in self.associated),
                         self.icc_profile is not None, self.focal_planes,
                         self.optical_paths, self.selection)
