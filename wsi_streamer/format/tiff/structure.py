"""What the TIFF driver keeps of a parsed slide: small, JSON-encodable (``codec``), keyed by
the reader's identity in the shared cache. Private to the driver; others see ``info``."""

from __future__ import annotations

from dataclasses import dataclass

from ..info import SlideInfo
from .header import TiffFormat
from .ifd import IfdEntry
from .levels import TiffLevel
from .strips import StripImage


@dataclass(frozen=True, slots=True)
class TiffStructure:
    format_name: str
    vendor: str
    tiff: TiffFormat
    levels: tuple[TiffLevel, ...]
    properties: tuple[tuple[str, str], ...]
    mpp_x: float | None
    mpp_y: float | None
    magnification: float | None
    associated: tuple[StripImage, ...] = ()
    icc_profile: IfdEntry | None = None  # read on first use

    @property
    def info(self) -> SlideInfo:
        return SlideInfo(self.format_name, self.vendor,
                         tuple(level.geometry for level in self.levels), self.properties,
                         self.mpp_x, self.mpp_y, self.magnification,
                         tuple(image.name for image in self.associated),
                         self.icc_profile is not None)
