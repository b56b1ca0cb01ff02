"""Aperio SVS: ImageDescription properties (MPP, AppMag) and which IFDs are not levels."""

from __future__ import annotations

import re

from ..base import positive_number
from .ifd import Ifd
from .tags import Tag

FORMAT_NAME = "Aperio SVS"
_ASSOCIATED = re.compile(r"\b(label|macro|thumbnail)\b", re.IGNORECASE)


def is_aperio(description: str) -> bool:
    return description.startswith("Aperio")


def parse_description(description: str) -> dict[str, str]:
    """``key = value`` pairs after the first ``|``, as ``aperio.<key>`` properties."""
    props: dict[str, str] = {}
    for part in description.split("|")[1:]:
        key, sep, value = part.partition("=")
        if sep and key.strip():
            props[f"aperio.{key.strip()}"] = value.strip()
    return props


def is_associated(index: int, ifd: Ifd) -> bool:
    """Thumbnail, label or macro: named in the description's second line, or NewSubfileType
    marks a mask or macro (Aperio writes 1 for the label and 9 for the macro)."""
    lines = ifd.text(Tag.IMAGE_DESCRIPTION).splitlines()
    if len(lines) > 1 and _ASSOCIATED.search(lines[1].split("|")[0]):
        return True
    if lines and _ASSOCIATED.match(lines[0]):
        return True
    subfile = ifd.int_value(Tag.NEW_SUBFILE_TYPE, 0) or 0
    return bool(subfile & 0b1100)


def scan_properties(props: dict[str, str]) -> tuple[float | None, float | None, float | None]:
    """``(mpp_x, mpp_y, magnification)`` from ``aperio.MPP`` and ``aperio.AppMag``."""
    mpp = positive_number(props.get("aperio.MPP"))
    return mpp, mpp, positive_number(props.get("aperio.AppMag"))


def associated_ifds(ifds: tuple[Ifd, ...]) -> list[tuple[str, int]]:
    """``(name, IFD index)`` of the ``thumbnail`` (the stripped IFD 1 Aperio writes), ``label``
    and ``macro`` when present."""
    found: list[tuple[str, int]] = []
    for index, ifd in enumerate(ifds[1:], start=1):
        text = " ".join(ifd.text(Tag.IMAGE_DESCRIPTION).splitlines()[:2])
        match = _ASSOCIATED.search(text)
        if match is not None:
            name = match.group(1).lower()
        elif index == 1 and ifd.value(Tag.TILE_WIDTH) is None:
            name = "thumbnail"
        else:
            continue
        if name not in (n for n, _ in found):
            found.append((name, index))
    return found
