"""The one integer parser for every path and query integer of the HTTP API.

Only ASCII digits count: ``str.isdigit`` accepts ``'²'`` or ``'①'``, which ``int`` then
refuses (a 500), and ``int`` itself accepts ``'٣'``, ``'1_000'`` and surrounding whitespace.
Here an integer is an optional ``-`` and 1 to ``max_digits`` characters ``0``-``9``, nothing
else; anything else raises the caller's error (a 400 with the code of API.md)."""

from __future__ import annotations

import re

from ..errors import InvalidParameter, InvalidQuality

_INT = re.compile(r"-?[0-9]+")
_UNSIGNED = re.compile(r"[0-9]+")


def ascii_int(raw: str, *, max_digits: int, signed: bool = True) -> int | None:
    """The value of ``raw`` when it is exactly ``-?[0-9]{1,max_digits}`` (no sign when not
    ``signed``), else None. Never raises."""
    match = (_INT if signed else _UNSIGNED).fullmatch(raw)
    if match is None or len(raw.lstrip("-")) > max_digits:
        return None
    return int(raw)


def parse_quality(raw: str | None, default: int) -> int:
    """``None`` -> ``default``; else an integer 1-100 or ``InvalidQuality``."""
    if raw is None:
        return default
    value = ascii_int(raw, max_digits=3, signed=False)
    if value is None or not 1 <= value <= 100:
        raise InvalidQuality(raw)
    return value


def parse_int(raw: str | None, name: str, default: int) -> int:
    """A query integer: absent or empty -> ``default``; else up to 12 digits, optionally
    negative (callers clamp), or ``InvalidParameter`` naming ``name``."""
    if raw is None or raw == "":
        return default
    value = ascii_int(raw, max_digits=12)
    if value is None:
        raise InvalidParameter(f"{name} must be an integer, got {raw[:32]!r}")
    return value


MAX_PATH_INT = 1 << 40


def path_int(raw: str, name: str) -> int:
    """A path integer (level, column, row): up to 15 digits, optionally negative, clamped to
    +-2**40 (so it stays an ``int`` the grid checks refuse), or ``InvalidParameter``."""
    value = ascii_int(raw, max_digits=15)
    if value is None:
        raise InvalidParameter(f"{name} must be an integer, got {raw[:32]!r}")
    return max(-MAX_PATH_INT, min(MAX_PATH_INT, value))
