"""The neutral description of an open slide, the same whatever the format driver: what the
``SlideReader`` contract, the registry, the server, the shared cache and the patch pipeline see.
Container details (TIFF IFDs and tags, OpenSlide handles) stay inside the drivers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LevelGeometry:
    """One pyramid level as a grid of tiles. ``downsample`` is relative to level 0 (the
    average of x and y); edge tiles are cropped to ``width`` x ``height``."""

    level: int
    width: int
    height: int
    tile_width: int
    tile_height: int
    tiles_x: int
    tiles_y: int
    downsample: float

    @property
    def tile_count(self) -> int:
        return self.tiles_x * self.tiles_y


@dataclass(frozen=True, slots=True)
class SlideInfo:
    """Everything a caller may know about a slide without reading pixels. ``levels`` are
    ordered largest first; ``properties`` are ``(name, value)`` pairs (vendor keys such as
    ``aperio.MPP``, ``tiff.ImageDescription`` or ``openslide.*``); ``associated`` names the
    label, macro and thumbnail images the file holds; ``has_icc_profile`` says whether it
    carries the scanner's colour profile. A slide made of several images of one field (DICOM
    focal planes and optical paths) names them: ``focal_planes`` (Z in micrometres, by index),
    ``optical_paths`` (identifiers) and the ``selection`` shown (``z=<index>,path=<id>``, the
    suffix ``io.series.split_selection`` reads); all empty for other slides."""

    format_name: str
    vendor: str
    levels: tuple[LevelGeometry, ...]
    properties: tuple[tuple[str, str], ...]
    mpp_x: float | None
    mpp_y: float | None
    magnification: float | None
    associated: tuple[str, ...] = ()
    has_icc_profile: bool = False
    focal_planes: tuple[float, ...] = ()
    optical_paths: tuple[str, ...] = ()
    selection: str = ""
