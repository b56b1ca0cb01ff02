"""Generic pyramidal TIFF: levels are the tiled IFDs of the main chain; MPP from resolution."""

from __future__ import annotations

import re

from .ifd import Ifd
from .tags import Tag

FORMAT_NAME = "Generic Pyramidal TIFF"
_ASSOCIATED = re.compile(r"^\s*(label|macro|thumbnail)\b", re.IGNORECASE)
_UNIT_MICRONS = {2: 25400.0, 3: 10000.0}  # ResolutionUnit inch, centimetre


def is_associated(index: int, ifd: Ifd) -> bool:
    subfile = ifd.int_value(Tag.NEW_SUBFILE_TYPE, 0) or 0
    return bool(subfile & 0b0110) or bool(_ASSOCIATED.match(ifd.text(Tag.IMAGE_DESCRIPTION)))


def resolution_mpp(ifd: Ifd) -> tuple[float | None, float | None]:
    """Microns per pixel from X/YResolution when the unit is inch or centimetre."""
    unit = _UNIT_MICRONS.get(ifd.int_value(Tag.RESOLUTION_UNIT, 2) or 2)
    if unit is None:
        return None, None

    def mpp(tag: int) -> float | None:
        value = ifd.value(tag)
        if isinstance(value, tuple) and value and float(value[0]) > 1.0:
            return unit / float(value[0])
        return None

    return mpp(Tag.X_RESOLUTION), mpp(Tag.Y_RESOLUTION)


def associated_ifds(ifds: tuple[Ifd, ...]) -> list[tuple[str, int]]:
    """``(name, IFD index)`` of label, macro and thumbnail IFDs named by their
    ImageDescription."""
    found: list[tuple[str, int]] = []
    for index, ifd in enumerate(ifds[1:], start=1):
        match = _ASSOCIATED.match(ifd.text(Tag.IMAGE_DESCRIPTION))
        if match is not None and match.group(1).lower() not in (n for n, _ in found):
            found.append((match.group(1).lower(), index))
    return found
